"""Collect many ``results.json`` files into one table.

:func:`aggregate` flattens every results file under a directory into one row per run;
:func:`write_tables` writes all rows as CSV and a Markdown table of mean ± std over seeds per
group. A group is the shown columns (method, data set, split, backbone by default) AND the run's
full resolved config minus its seed AND the identity of its data (which images), so runs that
differ in a learning rate, or were made on two different image folders, are never averaged
together (:func:`group_runs`). Seeds are counted distinct: runs that repeat a seed are shown as
duplicates and count once (their mean). A run whose top-1 is undefined (NaN, or no labelled
evaluation data) is left out of every statistic and listed with the reason.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labelless.config import flatten
from labelless.errors import LabellessError
from labelless.eval.results import RESULTS_FILENAME, load_results
from labelless.utils.io import atomic_write_text, stable_hash

log = logging.getLogger(__name__)

__all__ = ["COLUMNS", "RunGroup", "aggregate", "group_runs", "markdown_table", "write_tables"]

COLUMNS = (
    "method",
    "backbone",
    "dataset",
    "split",
    "seed",
    "top1",
    "est_top1",
    "top5",
    "mean_per_class",
    "wall_s",
    "git_sha",
    "config_key",
    "data_key",
    "excluded",
    "path",
)
_METRIC_COLUMNS = ("top1", "top5", "mean_per_class")
# config keys that do not make a run a different experiment: the seed (what a group averages
# over), where it was written, how it ran (device, workers, cache), and the data specs (the
# data's identity, which images, stands for them: two paths to one folder are one data set)
_NOT_IDENTITY = ("seed", "out", "runtime", "params", "data", "eval_data")


def _name(d: Any, *keys: str) -> str | None:
    """First present key of a dict (or the value itself if it is a string)."""
    if isinstance(d, str):
        return d
    if isinstance(d, dict):
        for k in keys:
            if d.get(k) not in (None, ""):
                return str(d[k])
    return None


def _num(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _identity(record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(config, data)``: the resolved config minus the seed and the other non-identity keys
    (see ``_NOT_IDENTITY``) with the backbone weights digest, and the data identity (fingerprint
    of the evaluation and training images when recorded, else their specs)."""
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    if isinstance(config.get("run"), dict):  # labelless.runner: {"run": RunConfig, "method": ...}
        ident = {k: v for k, v in config.items() if k != "run"}
        ident["run"] = {k: v for k, v in config["run"].items() if k not in _NOT_IDENTITY}
    else:
        ident = {k: v for k, v in config.items() if k != "seed"}
    backbone = record.get("backbone")
    if isinstance(backbone, dict) and backbone.get("fingerprint"):
        ident["backbone_weights"] = backbone["fingerprint"]
    data = record.get("data") if isinstance(record.get("data"), dict) else {}
    train = ((record.get("extra") or {}).get("train_data")) or {}
    ident_data = {"eval": data.get("fingerprint") or data.get("spec") or data.get("name")}
    if isinstance(train, dict) and train:
        ident_data["train"] = train.get("fingerprint") or train.get("spec")
    return ident, ident_data


def _row(record: dict[str, Any], path: Path, root: Path) -> dict[str, Any]:
    metrics = record.get("metrics") or {}
    label_free = record.get("label_free") or {}
    resources = record.get("resources") or {}
    git = (record.get("provenance") or {}).get("git") or {}
    data = record.get("data")
    split = record.get("split")
    if split is None and isinstance(data, dict):
        split = data.get("split")
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = path
    ident, ident_data = _identity(record)
    top1 = _num(metrics.get("top1"))
    if not record.get("metrics"):
        excluded = "no metrics (evaluation data without labels?)"
    elif top1 is None:
        excluded = "top-1 is undefined (NaN or missing)"
    else:
        excluded = None
    data_spec = data.get("spec") if isinstance(data, dict) else None
    return {
        "config_key": stable_hash(ident, length=10),
        "data_key": stable_hash(ident_data, length=10),
        "excluded": excluded,
        "_identity": {**ident, "data": data_spec, "data_id": ident_data},
        "method": record.get("method"),
        "backbone": _name(record.get("backbone"), "name", "spec"),
        "dataset": _name(data, "name", "spec"),
        "split": split,
        "seed": record.get("seed"),
        "top1": top1,
        "est_top1": _num(label_free.get("estimated_top1")),
        "top5": _num(metrics.get("top5")),
        "mean_per_class": _num(metrics.get("mean_per_class")),
        "wall_s": _num(resources.get("wall_s")),
        "git_sha": git.get("sha"),
        "path": str(rel),
    }


def aggregate(runs_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """One flat row per ``results.json`` found recursively under ``runs_dir``.

    Row keys: :data:`COLUMNS` (``path`` relative to ``runs_dir``; metrics in %, ``None`` when
    undefined). Unreadable or invalid files are skipped with a single ``UserWarning`` that
    counts and names them. Raises :class:`~labelless.errors.LabellessError` if ``runs_dir`` is
    not a directory.
    """
    root = Path(runs_dir)
    if not root.is_dir():
        raise LabellessError(f"runs directory '{root}' does not exist or is not a directory.")
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for path in sorted(root.rglob(RESULTS_FILENAME)):
        if not path.is_file():
            continue
        try:
            record = load_results(path)
        except LabellessError as e:
            skipped.append(str(e))  # the message names the file
            continue
        rows.append(_row(record, path, root))
    if skipped:
        log.warning(f"skipped {len(skipped)} invalid results file(s):\n  " + "\n  ".join(skipped))
    rows.sort(
        key=lambda r: tuple(
            str(r[k]) for k in ("method", "dataset", "split", "backbone", "seed", "path")
        )
    )
    return rows


def _mean_std(values: Sequence[float | None]) -> str:
    """``mean ± std`` (sample std, ddof=1) of the defined values; ``n/a`` if none."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "n/a"
    mean = statistics.fmean(vals)
    if len(vals) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {statistics.stdev(vals):.2f}"


@dataclass
class RunGroup:
    """Runs of one experiment: same shown key, config (minus seed) and data identity.

    ``runs``: the included runs; ``per_seed``: ``{seed: [runs]}`` (more than one run under a
    seed = duplicates); ``differs``: ``key=value`` settings that tell this group apart from the
    groups with the same shown key.
    """

    key: tuple
    runs: list[dict[str, Any]]
    differs: list[str] = field(default_factory=list)

    @property
    def per_seed(self) -> dict[Any, list[dict[str, Any]]]:
        out: dict[Any, list[dict[str, Any]]] = {}
        for r in self.runs:
            out.setdefault(r.get("seed"), []).append(r)
        return out

    @property
    def duplicates(self) -> dict[Any, int]:
        """``{seed: number of runs}`` for the seeds run more than once."""
        return {s: len(rs) for s, rs in self.per_seed.items() if len(rs) > 1}

    def seed_values(self, col: str) -> list[float | None]:
        """One value per distinct seed: the mean of that seed's runs (None if none has it)."""
        out = []
        for runs in self.per_seed.values():
            vals = [r.get(col) for r in runs if r.get(col) is not None and math.isfinite(r[col])]
            out.append(statistics.fmean(vals) if vals else None)
        return out

    def label(self, group_by: Sequence[str]) -> str:
        parts = [str(v) for v in self.key[: len(group_by)] if v is not None]
        return " ".join(parts) + (f" [{', '.join(self.differs)}]" if self.differs else "")


def _short(value: Any, n: int = 32) -> str:
    """``value`` as text of at most ``n`` characters, keeping the end (the telling part of a
    path or a spec)."""
    text = str(value)
    return text if len(text) <= n else "..." + text[-(n - 3):]


def group_runs(
    rows: Sequence[dict[str, Any]],
    group_by: Sequence[str] = ("method", "dataset", "split", "backbone"),
) -> tuple[list[RunGroup], list[dict[str, Any]]]:
    """``(groups, excluded)``: the included runs grouped by ``group_by`` + config + data identity
    (sorted), and the runs left out of every statistic (their ``excluded`` says why)."""
    groups: dict[tuple, RunGroup] = {}
    excluded = []
    for r in rows:
        if r.get("excluded"):
            excluded.append(r)
            continue
        key = (*(r.get(k) for k in group_by), r.get("config_key"), r.get("data_key"))
        groups.setdefault(key, RunGroup(key, [])).runs.append(r)
    ordered = [groups[k] for k in sorted(groups, key=lambda k: tuple(str(x) for x in k))]
    # groups that look alike in the shown columns: name the settings that tell them apart
    shown: dict[tuple, list[RunGroup]] = {}
    for g in ordered:
        shown.setdefault(g.key[: len(group_by)], []).append(g)
    for siblings in shown.values():
        if len(siblings) < 2:
            continue
        flat = [flatten(g.runs[0].get("_identity") or {}) for g in siblings]
        keys = sorted({k for f in flat for k in f})
        varying = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
        if "data" in varying:  # the specs already tell the data sets apart
            varying = [k for k in varying if not k.startswith("data_id.")]
        for g, f in zip(siblings, flat):
            g.differs = [f"{k}={_short(f.get(k))}" for k in varying][:4] or [f"config {g.key[-2]}"]
    return ordered, excluded


def markdown_table(
    rows: Sequence[dict[str, Any]],
    group_by: Sequence[str] = ("method", "dataset", "split", "backbone"),
) -> str:
    """Markdown table of mean ± sample std over the distinct seeds of each group (see the
    module docstring), then the duplicated seeds and the excluded runs with their reasons.

    The label-free estimate of top-1 (``est_top1``) gets a column beside top-1 when any run has
    one.
    """
    groups, excluded = group_runs(rows, group_by)
    any_differs = any(g.differs for g in groups)
    metric_cols = list(_METRIC_COLUMNS)
    metric_names = ["top-1 (%)", "top-5 (%)", "mean/class (%)"]
    if any(r.get("est_top1") is not None for r in rows):
        metric_cols.insert(1, "est_top1")
        metric_names.insert(1, "est. top-1, no labels (%)")
    header = [*group_by, *(["settings"] if any_differs else []), "seeds", "runs", *metric_names,
              "wall (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    notes = []
    for g in groups:
        cells = ["" if v is None else str(v) for v in g.key[: len(group_by)]]
        if any_differs:
            cells.append(", ".join(g.differs))
        n_seeds = len(g.per_seed)
        cells += [str(n_seeds), str(len(g.runs))]
        for col in metric_cols:
            vals = g.seed_values(col)
            have = sum(v is not None for v in vals)
            cell = _mean_std(vals)
            if 0 < have < n_seeds:  # never average a metric over other runs than top-1 silently
                cell += f" ({have} of {n_seeds} seeds)"
            cells.append(cell)
        walls = [m["wall_s"] for m in g.runs if m.get("wall_s") is not None]
        cells.append(f"{statistics.fmean(walls):.1f}" if walls else "n/a")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        if g.duplicates:
            dup = ", ".join(f"seed {s} x{n}" for s, n in g.duplicates.items())
            notes.append(f"- duplicates in {g.label(group_by)}: {dup} (each seed counts once, "
                         "as the mean of its runs)")
    lines.append("")
    lines.append("Mean ± sample standard deviation (ddof=1) over the distinct seeds of each group; "
                 "a group is one config (all settings but the seed) on one data set.")
    if notes:
        lines += ["", "Duplicated seeds:", *notes]
    if excluded:
        lines += ["", f"Excluded runs ({len(excluded)}):"]
        lines += [f"- {r.get('path')}: {r.get('excluded')}" for r in excluded]
    return "\n".join(lines) + "\n"


def write_tables(
    rows: Sequence[dict[str, Any]],
    out_csv: str | os.PathLike,
    out_md: str | os.PathLike,
    group_by: Sequence[str] = ("method", "dataset", "split", "backbone"),
) -> tuple[Path, Path]:
    """Write all runs to ``out_csv`` and the per-group mean ± std table to ``out_md``.

    Both files are written atomically. Returns ``(csv_path, md_path)``.
    """
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=list(COLUMNS), extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    csv_path = atomic_write_text(out_csv, buf.getvalue())
    md_path = atomic_write_text(out_md, markdown_table(rows, group_by))
    return csv_path, md_path
