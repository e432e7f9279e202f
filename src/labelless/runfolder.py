"""The run folder: one run per folder, checked before any work, resumed only with its settings.

``labelless zeroshot``/``adapt`` write everything of a run into one folder (``--out``). Before
any model is loaded, :class:`RunFolder` makes sure that

* the folder can be written: not a file, not under a file, writable (a read-only or locked
  folder fails at once, not after an epoch of training);
* it does not hold another run: a folder with another run's results or checkpoint is refused
  unless ``overwrite`` (``--overwrite``), which clears it first; rerunning the same settings
  into the same folder is allowed (it rewrites the same files);
* a resume continues the same run: the method config, data, model, class names and texts must
  be those the folder's run started with, else the resume is refused naming the keys that
  differ. Runtime settings (device, workers, batch size for feature extraction, cache,
  progress bars) may change; each change is recorded with the checkpoint step it applies from.

The folder's record, ``run.json``, holds the settings, the identity of the inputs (backbone
weights digest, data set fingerprint, class names, text hashes), the runtime, and the wall time
of every stretch of the run (an interrupted stretch counts up to its last write), so a resumed
run reports its whole wall time. Temporary files of atomic writes cut short by a kill
(``.NAME.XXXX.tmp*``) are removed when a run continues in the folder.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from labelless.config import flatten
from labelless.engine import distributed
from labelless.errors import ConfigError, LabellessError
from labelless.utils.io import atomic_write_json

log = logging.getLogger(__name__)

RECORD_FILENAME = "run.json"
RECORD_VERSION = 1
#: files a run writes; one of them in a folder without a record means "another run's folder"
RUN_OUTPUTS = ("results.json", "checkpoint.pt", "train_log.csv", "classifier/artifact.json")
#: runtime settings a resume may change (recorded with the step they apply from)
RESUMABLE_RUNTIME = ("device", "batch_size", "num_workers", "cache_dir", "progress")
#: ``.NAME.XXXXXXXX.tmp[.SUFFIX]``: tempfile.mkstemp's names in atomic_save
_PARTIAL = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp(\.[A-Za-z0-9_]+)?$")


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _try_write(folder: Path) -> OSError | None:
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".labelless-write-test.")
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        return e
    return None


def _refuse_under_a_file(path: Path, flag: str, fix: str) -> None:
    """Raise when the nearest existing ancestor of ``path`` is a file, not a folder."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise LabellessError(f"{flag} '{path}' lies under '{parent}', which is a file. {fix}")
            return


def check_out_dir(path: str | os.PathLike, flag: str = "--out", subfolders: bool = False) -> Path:
    """Create ``path`` as a folder and check that files can be written in it (and, with
    ``subfolders``, in the folders directly under it); raise :class:`LabellessError` naming the
    path and the fix."""
    path = Path(path)
    fix = f"Choose a writable folder with {flag}."
    if path.exists() and not path.is_dir():
        raise LabellessError(f"{flag} '{path}' is an existing file, not a folder. {fix}")
    _refuse_under_a_file(path, flag, fix)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LabellessError(f"cannot create the folder {flag} '{path}': {e.strerror or e}. {fix}") from None
    folders = [path]
    if subfolders:
        folders += sorted(p for p in path.iterdir() if p.is_dir() and not p.is_symlink())
    for folder in folders:
        err = _try_write(folder)
        if err is not None:
            where = "" if folder == path else f" (its sub-folder '{folder.name}')"
            raise LabellessError(
                f"cannot write to {flag} '{path}'{where}: {err.strerror or err}. The folder is "
                f"read-only or locked; nothing was run. {fix}"
            )
    return path


def check_out_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Check that a file can be written at ``path`` (its folder is created); raise
    :class:`LabellessError` when ``path`` is a folder, lies under a file, or its folder cannot
    be written."""
    path = Path(path)
    fix = f"Give a writable file path, e.g. {flag} predictions.csv."
    if path.is_dir():
        raise LabellessError(f"{flag} '{path}' is a folder, not a file. {fix}")
    _refuse_under_a_file(path, flag, fix)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LabellessError(f"cannot create the folder of {flag} '{path}': {e.strerror or e}. {fix}") from None
    err = _try_write(path.parent)
    if err is not None:
        raise LabellessError(f"cannot write {flag} '{path}': {err.strerror or err}; nothing was run. {fix}")
    return path


def _describe_run(folder: Path) -> str:
    """A few words on the run held by ``folder`` (method, seed), from its results if readable."""
    for name in (RECORD_FILENAME, "results.json"):
        try:
            rec = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        settings = rec.get("settings") or (rec.get("config") or {}).get("run") or {}
        method = settings.get("method") or rec.get("method")
        if method:
            return f"a '{method}' run (seed {settings.get('seed', rec.get('seed'))})"
    return "another run"


def _diff(old: dict, new: dict) -> list[str]:
    """``key: old -> new`` for every (flattened) key whose value differs."""
    a, b = flatten(old), flatten(new)
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            out.append(f"{key}: {a.get(key, '<unset>')!r} -> {b.get(key, '<unset>')!r}")
    return out


def _checkpoint_steps(folder: Path) -> dict[str, Any]:
    """``{relative checkpoint path: {"epoch", "global_step"}}`` of every checkpoint in ``folder``
    (memory-mapped: only the small counters are read)."""
    import torch

    out: dict[str, Any] = {}
    for ckpt in sorted(folder.rglob("checkpoint.pt")):
        try:
            state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
            out[ckpt.relative_to(folder).as_posix()] = {
                "epoch": int(state.get("epoch", 0)), "global_step": int(state.get("global_step", 0))}
        except Exception:  # an unreadable checkpoint is reported by the training loop itself
            out[ckpt.relative_to(folder).as_posix()] = None
    return out


def remove_partial_files(folder: Path) -> list[Path]:
    """Delete the temporary files of atomic writes cut short by a kill (``.NAME.XXXX.tmp*``,
    see :func:`labelless.utils.io.atomic_save`) under ``folder``; return them."""
    gone = []
    for p in folder.rglob(".*.tmp*"):
        if p.is_file() and _PARTIAL.match(p.name):
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


class RunFolder:
    """The folder of one run (see the module docstring).

    >>> folder = RunFolder(out, resume=False, overwrite=False)
    >>> folder.claim(settings, runtime)      # before loading anything: refuse, clear, record
    >>> folder.check_inputs(inputs)          # after building backbone, data and texts
    >>> folder.finish(wall_s)                # before writing results.json
    """

    def __init__(self, path: str | os.PathLike, resume: bool = False, overwrite: bool = False):
        if resume and overwrite:
            raise ConfigError(
                "--resume continues the run in the output folder and --overwrite clears it: pass one"
            )
        self.path = Path(path)
        self.resume = resume
        self.overwrite = overwrite
        self.record: dict[str, Any] | None = None
        self.resumes: list[dict] = []
        self.previous_wall_s: list[float] = []
        self._t0 = time.time()

    # -- reading ----------------------------------------------------------------------------
    @property
    def record_path(self) -> Path:
        return self.path / RECORD_FILENAME

    def _read_record(self) -> dict[str, Any] | None:
        if not self.record_path.is_file():
            return None
        try:
            rec = json.loads(self.record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise LabellessError(
                f"'{self.record_path}' cannot be read ({e}); it describes the run in '{self.path}'. "
                "Pass --overwrite to clear the folder, or choose another --out."
            ) from None
        if not isinstance(rec, dict) or "settings" not in rec:
            raise LabellessError(f"'{self.record_path}' is not a labelless run record")
        return rec

    def _outputs(self) -> list[str]:
        found = [name for name in RUN_OUTPUTS if (self.path / name).exists()]
        found += [p.relative_to(self.path).as_posix() for p in self.path.glob("*/checkpoint.pt")]
        return found

    # -- claiming ---------------------------------------------------------------------------
    def claim(self, settings: dict[str, Any], runtime: dict[str, Any]) -> None:
        """Check the folder and decide (the same way on every rank), then on rank 0 clear
        (``overwrite``), remove partial files and write the record."""
        check_out_dir(self.path, subfolders=True)
        record = self._read_record()
        outputs = self._outputs()
        clear = False
        fix = (f"To start a new run with these settings, choose another --out, or pass --overwrite "
               f"to clear '{self.path}' first")
        if self.overwrite:
            if record is None and not outputs and any(self.path.iterdir()):
                raise LabellessError(
                    f"--overwrite clears run folders only, and '{self.path}' holds files but no "
                    "labelless run: empty it yourself or choose another --out"
                )
            clear, record = bool(record is not None or outputs), None
        elif record is not None:
            changed = _diff(record["settings"], settings)
            if changed and self.resume:
                raise LabellessError(
                    f"cannot resume the run in '{self.path}' with different settings; a resumed run "
                    f"must keep the method config, data, model, classes and texts it started with. "
                    f"Changed: " + "; ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")
                    + f". Resume without these changes, or: {fix}."
                )
            if changed:
                raise LabellessError(
                    f"'{self.path}' holds {_describe_run(self.path)} with other settings ("
                    + "; ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
                    + f"). {fix}."
                )
            ckpts = [o for o in outputs if o.endswith("checkpoint.pt")]
            if ckpts and not self.resume:
                raise LabellessError(
                    f"'{self.path}' holds a checkpoint of this run ({ckpts[0]}): pass --resume to "
                    f"continue it, or --overwrite to start it again from scratch"
                )
        elif outputs:
            if self.resume:
                log.warning(
                    f"'{self.path}' has no {RECORD_FILENAME} (made by an older labelless?): the "
                    "settings of the interrupted run cannot be checked against this resume"
                )
            elif "results.json" not in outputs and any(o.endswith("checkpoint.pt") for o in outputs):
                raise LabellessError(
                    f"'{self.path}' holds the checkpoint of an interrupted run without a "
                    f"{RECORD_FILENAME} (made by an older labelless): pass --resume to continue it "
                    "with the same settings, or --overwrite to clear the folder first"
                )
            else:
                raise LabellessError(
                    f"'{self.path}' already holds the results of {_describe_run(self.path)} "
                    f"({', '.join(outputs[:4])}); writing this run there would mix two runs. {fix}."
                )
        now = {"started_utc": _utc_now(), "started_unix": time.time()}
        continuing = record is not None and self.resume
        if continuing:
            self.previous_wall_s = self._close_stretches(record)
            old_rt = record.get("runtime") or {}
            rt_changed = {k: {"was": old_rt.get(k), "now": runtime.get(k)}
                          for k in RESUMABLE_RUNTIME if old_rt.get(k) != runtime.get(k)}
            event = {"at_utc": now["started_utc"], "checkpoints": _checkpoint_steps(self.path),
                     "runtime_changed": rt_changed}
            record.setdefault("resumes", []).append(event)
            record["runtime"] = runtime
            if rt_changed:
                log.info(f"resume: runtime settings changed ({', '.join(rt_changed)}); recorded in "
                      f"{self.record_path}")
        else:
            record = {"labelless_run": RECORD_VERSION, "settings": settings, "inputs": None,
                      "runtime": runtime, "stretches": [], "resumes": []}
        record["stretches"].append(dict(now))
        record["finished"] = False
        self.record, self.resumes = record, list(record.get("resumes", []))
        distributed.barrier()  # every rank has read the folder before rank 0 changes it
        if distributed.is_main():
            if clear:
                for p in list(self.path.iterdir()):
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
            else:
                remove_partial_files(self.path)
            if not continuing:  # a resume is recorded once its inputs are checked
                self._write()
        distributed.barrier()

    def _close_stretches(self, record: dict) -> list[float]:
        """Wall seconds of the earlier stretches; an interrupted one counts up to the newest
        file it wrote (what came after its last write was lost and is redone)."""
        newest = 0.0
        for p in self.path.rglob("*"):
            if p.is_file() and p.name != RECORD_FILENAME:
                try:
                    newest = max(newest, p.stat().st_mtime)
                except OSError:
                    pass
        out = []
        for s in record.get("stretches", []):
            if s.get("wall_s") is None:
                s["wall_s"] = round(max(0.0, newest - float(s.get("started_unix", newest))), 3)
                s["interrupted"] = True
            out.append(float(s["wall_s"]))
        return out

    def check_inputs(self, inputs: dict[str, Any]) -> None:
        """Compare the identity of the built inputs (backbone weights, data, classes, texts)
        with the record on a resume; record them on a fresh run."""
        assert self.record is not None, "claim() first"
        old = self.record.get("inputs")
        if self.resume and old:
            changed = [line.split(":", 1)[0] for line in _diff(old, inputs)]
            if changed:
                raise LabellessError(
                    f"cannot resume the run in '{self.path}': its inputs changed since it started "
                    f"({', '.join(changed)} differ: a changed image folder, class list, text file "
                    "or checkpoint file). Restore them, or start a new run with another --out (or "
                    "--overwrite)."
                )
        self.record["inputs"] = inputs
        if distributed.is_main():
            self._write()

    def finish(self, wall_s: float | None) -> list[float]:
        """Close this stretch; return the wall seconds of every stretch (this one last)."""
        assert self.record is not None, "claim() first"
        last = self.record["stretches"][-1]
        last["wall_s"] = round(float(wall_s if wall_s is not None else time.time() - self._t0), 3)
        self.record["finished"] = True
        if distributed.is_main():
            self._write()
        return [float(s.get("wall_s") or 0.0) for s in self.record["stretches"]]

    def _write(self) -> None:
        atomic_write_json(self.record_path, self.record)


__all__ = ["RECORD_FILENAME", "RunFolder", "check_out_dir", "check_out_file", "remove_partial_files"]
