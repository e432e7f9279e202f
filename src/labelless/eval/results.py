"""One results JSON per run, with provenance.

:func:`write_results` writes ``<out_dir>/results.json`` (atomically) holding what was run
(method, backbone, data, seed, resolved config), what came out (metrics, per-class accuracy,
confusion matrix; ``label_free``: diagnostics and an accuracy estimate that need no label), what
it cost (:class:`RunRecorder`: wall time, peak memory) and where it came
from (:func:`provenance`: git SHA + dirty flag, package versions, Python, platform, command
line, UTC time). Hostnames and user names are never recorded; the user's home directory in the
command line is replaced by ``~``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import json
import math
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from labelless.errors import LabellessError
from labelless.eval.metrics import Metrics
from labelless.utils.io import atomic_write_json

__all__ = [
    "RESULTS_FILENAME",
    "SCHEMA_VERSION",
    "RunRecorder",
    "load_results",
    "provenance",
    "write_results",
]

SCHEMA_VERSION = 1
RESULTS_FILENAME = "results.json"

# Distributions whose versions are recorded; optional ones only when installed.
_CORE_PACKAGES = ("labelless", "torch", "torchvision", "open_clip_torch", "numpy")
_OPTIONAL_PACKAGES = ("transformers", "peft", "safetensors", "pillow", "openai")


def _git(args: list[str], cwd: Path) -> str | None:
    """Output of ``git <args>`` in ``cwd``, or None on any failure (no git, not a repo, ...)."""
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C"},
        )
    except Exception:
        return None
    return out.stdout if out.returncode == 0 else None


def _git_info() -> dict[str, Any]:
    """SHA and dirty flag of the git checkout that contains the labelless package, if any."""
    pkg_dir = Path(__file__).resolve().parent.parent
    info: dict[str, Any] = {"sha": None, "dirty": None}
    top = _git(["rev-parse", "--show-toplevel"], pkg_dir)
    if top is None:
        return info
    # An installed copy inside an ignored folder of some repo (e.g. .venv/ of a project) is not
    # that repo's code: its SHA would be misleading.
    if _git(["check-ignore", "-q", str(pkg_dir)], pkg_dir) is not None:
        return info
    sha = _git(["rev-parse", "HEAD"], pkg_dir)
    info["sha"] = sha.strip() if sha else None
    status = _git(["status", "--porcelain"], pkg_dir)
    info["dirty"] = bool(status.strip()) if status is not None else None
    return info


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in _CORE_PACKAGES + _OPTIONAL_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except Exception:
            if name in _CORE_PACKAGES:
                versions[name] = None
    return versions


def _scrub_home(s: str) -> str:
    """Replace the home directory (which contains the user name) by ``~``."""
    try:
        home = str(Path.home())
    except Exception:
        return s
    if home and home not in ("/", ""):
        s = s.replace(home, "~")
    return s


def _accelerator() -> dict[str, Any]:
    """CUDA availability, version and device names (no host identifiers)."""
    torch = sys.modules.get("torch")
    if torch is None:
        try:
            import torch
        except Exception:
            return {"cuda_available": False}
    try:
        available = bool(torch.cuda.is_available())
        info: dict[str, Any] = {"cuda_available": available, "cuda_version": torch.version.cuda}
        if available:
            info["devices"] = [
                torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())
            ]
        return info
    except Exception:
        return {"cuda_available": False}


def provenance() -> dict[str, Any]:
    """Where a result came from: git SHA/dirty, package versions, Python, platform, argv, time.

    Never raises: anything that cannot be determined is ``None``. Hostnames and user names are
    not recorded (the home directory in ``sys.argv`` becomes ``~``).
    """
    return {
        "git": _git_info(),
        "versions": _versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "accelerator": _accelerator(),
        "argv": [_scrub_home(str(a)) for a in sys.argv],
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _peak_rss_mb() -> float | None:
    """Peak resident set size of this process so far, in MiB (None where unsupported)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def _cuda_initialized() -> bool:
    torch = sys.modules.get("torch")
    try:
        return torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized()
    except Exception:
        return False


class RunRecorder:
    """Context manager recording wall time and peak memory of a run.

    ``with RunRecorder() as rec: ...`` then ``rec.wall_s``, ``rec.peak_rss_mb``,
    ``rec.peak_cuda_mb``. Inside the block the properties give the values so far. ``peak_rss_mb``
    is the process-wide peak since start (the OS does not reset it); ``peak_cuda_mb`` is
    used. ``previous_wall_s``: the wall seconds of earlier stretches of a resumed run;
    :meth:`to_dict`'s ``wall_s`` is then the sum of all stretches (listed in ``wall_s_stretches``).
    """

    def __init__(self, previous_wall_s: list[float] | tuple[float, ...] = ()) -> None:
        # wall seconds of earlier stretches of the same run (a resumed run counts them all)
        self.previous_wall_s = [float(s) for s in previous_wall_s]
        self._t0: float | None = None
        self._t1: float | None = None
        self._rss_end: float | None = None
        self._cuda_end: float | None = None

    def __enter__(self) -> RunRecorder:
        self._t0 = time.perf_counter()
        self._t1 = None
        if _cuda_initialized():
            import torch

            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: object) -> None:
        self._t1 = time.perf_counter()
        self._rss_end = _peak_rss_mb()
        self._cuda_end = self._cuda_now()
        return None

    @staticmethod
    def _cuda_now() -> float | None:
        if not _cuda_initialized():
            return None
        import torch

        return torch.cuda.max_memory_allocated() / (1 << 20)

    @property
    def wall_s(self) -> float | None:
        """Seconds spent in the block (so far, while inside it); None before entering."""
        if self._t0 is None:
            return None
        end = self._t1 if self._t1 is not None else time.perf_counter()
        return end - self._t0

    @property
    def peak_rss_mb(self) -> float | None:
        """Peak resident memory of the process in MiB."""
        return self._rss_end if self._t1 is not None else _peak_rss_mb()

    @property
    def peak_cuda_mb(self) -> float | None:
        """Peak CUDA memory allocated by torch in MiB, or None without CUDA."""
        return self._cuda_end if self._t1 is not None else self._cuda_now()

    def to_dict(self) -> dict[str, float | None]:
        """``{"wall_s", "peak_rss_mb", "peak_cuda_mb"}`` rounded for the results file."""

        def r(x: float | None, nd: int) -> float | None:
            return None if x is None else round(float(x), nd)

        wall = self.wall_s
        out = {
            "wall_s": r(None if wall is None else wall + sum(self.previous_wall_s), 3),
            "peak_rss_mb": r(self.peak_rss_mb, 1),
            "peak_cuda_mb": r(self.peak_cuda_mb, 1),
        }
        if self.previous_wall_s:  # a resumed run: every stretch, this one last
            out["wall_s_stretches"] = [r(s, 3) for s in [*self.previous_wall_s, wall]]
        return out


def _jsonable(obj: Any) -> Any:
    """A strict-JSON form of ``obj``: NaN/inf -> None, Path -> str, tuples -> lists, scalars."""
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Metrics):
        return _jsonable(obj.to_dict())
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, enum.Enum):
        return _jsonable(obj.value)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    tolist = getattr(obj, "tolist", None)  # numpy arrays/scalars, torch tensors
    if callable(tolist):
        return _jsonable(tolist())
    raise TypeError(f"cannot store a {type(obj).__name__} in results.json")


def write_results(
    out_dir: str | os.PathLike,
    *,
    method: str,
    backbone: dict[str, Any],
    data: dict[str, Any],
    seed: int | None,
    metrics: Metrics | dict[str, Any] | None,
    config: dict[str, Any],
    recorder: RunRecorder | None = None,
    extra: dict[str, Any] | None = None,
    label_free: dict[str, Any] | None = None,
) -> Path:
    """Write ``<out_dir>/results.json`` atomically and return its path.

    Args:
        out_dir: run directory (created if missing).
        method: registered method name, e.g. ``"zeroshot"``.
        backbone: description of the backbone; by convention ``{"spec": ..., "name": ...,
            "fingerprint": ...}`` (``name`` or ``spec`` is used by :func:`aggregate`).
        data: description of the evaluation data; by convention ``{"spec": ..., "name": ...,
            "split": ..., ...}`` (``split`` is also stored at top level).
        seed: random seed of the run.
        metrics: :class:`Metrics`, an equivalent dict, or None (e.g. unlabeled data).
        config: the fully resolved run config (a plain dict, e.g. ``config.to_dict(cfg)``).
        recorder: the run's :class:`RunRecorder` (wall time, peak memory), if any.
        extra: any other JSON-able information (per-epoch losses, text-source hash, ...).
        label_free: the run's label-free diagnostics and accuracy estimate
            (:func:`labelless.eval.label_free.label_free_diagnostics`), if computed.

    NaN becomes ``null``, paths become strings; a non-serialisable value raises ``TypeError``
    before anything is written.
    """
    out_dir = Path(out_dir)
    record = {
        "schema_version": SCHEMA_VERSION,
        "method": method,
        "backbone": backbone,
        "data": data,
        "split": (data or {}).get("split") if isinstance(data, dict) else None,
        "seed": seed,
        "metrics": metrics,
        "label_free": label_free,
        "config": config,
        "resources": recorder.to_dict() if recorder is not None else None,
        "provenance": provenance(),
        "extra": extra or {},
    }
    return atomic_write_json(out_dir / RESULTS_FILENAME, _jsonable(record))


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a results file (or ``<dir>/results.json`` when given a directory).

    Raises :class:`~labelless.errors.LabellessError` when the file is missing, is not valid
    JSON, is not a labelless results object, or has a newer schema than this version reads.
    """
    p = Path(path)
    if p.is_dir():
        p = p / RESULTS_FILENAME
    if not p.is_file():
        raise LabellessError(
            f"no results file at '{p}'. Pass a run directory or its {RESULTS_FILENAME} "
            "written by a finished run."
        )
    try:
        record = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LabellessError(
            f"results file '{p}' is not valid JSON ({e}). It may be from a run that was "
            "interrupted; re-run it or delete the file."
        ) from None
    except OSError as e:
        raise LabellessError(f"cannot read results file '{p}': {e}") from None
    if not isinstance(record, dict) or "schema_version" not in record or "method" not in record:
        raise LabellessError(
            f"'{p}' is JSON but not a labelless results file (no 'schema_version'/'method')."
        )
    version = record["schema_version"]
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise LabellessError(
            f"'{p}' has results schema_version {version!r}; this labelless reads up to "
            f"{SCHEMA_VERSION}. Upgrade labelless to read it."
        )
    return record
