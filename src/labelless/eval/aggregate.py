"""Collect many ``results.json`` files into one table.

:func:`aggregate` flattens every results file under a directory into one row per run;
:func:`write_tables` writes all rows as CSV and a Markdown table of mean ± std over seeds per
group (method, data set, split, backbone by default).
"""

from __future__ import annotations

import csv
import io
import math
import os
import statistics
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labelless.errors import LabellessError
from labelless.eval.results import RESULTS_FILENAME, load_results
from labelless.utils.io import atomic_write_text

__all__ = ["COLUMNS", "aggregate", "markdown_table", "write_tables"]

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
    "path",
)
_METRIC_COLUMNS = ("top1", "top5", "mean_per_class")


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
    return {
        "method": record.get("method"),
        "backbone": _name(record.get("backbone"), "name", "spec"),
        "dataset": _name(data, "name", "spec"),
        "split": split,
        "seed": record.get("seed"),
        "top1": _num(metrics.get("top1")),
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
        warnings.warn(
            f"skipped {len(skipped)} invalid results file(s):\n  " + "\n  ".join(skipped),
            UserWarning,
            stacklevel=2,
        )
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


def markdown_table(
    rows: Sequence[dict[str, Any]],
    group_by: Sequence[str] = ("method", "dataset", "split", "backbone"),
) -> str:
    """Markdown table of mean ± sample std over runs (seeds) per ``group_by`` group.

    The label-free estimate of top-1 (``est_top1``) gets a column beside top-1 when any run has
    one.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(k) for k in group_by), []).append(r)
    metric_cols = list(_METRIC_COLUMNS)
    metric_names = ["top-1 (%)", "top-5 (%)", "mean/class (%)"]
    if any(r.get("est_top1") is not None for r in rows):
        metric_cols.insert(1, "est_top1")
        metric_names.insert(1, "est. top-1, no labels (%)")
    header = [*group_by, "seeds", *metric_names, "wall (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for key in sorted(groups, key=lambda k: tuple(str(x) for x in k)):
        members = groups[key]
        cells = ["" if v is None else str(v) for v in key]
        cells.append(str(len(members)))
        for col in metric_cols:
            cells.append(_mean_std([m.get(col) for m in members]))
        walls = [m["wall_s"] for m in members if m.get("wall_s") is not None]
        cells.append(f"{statistics.fmean(walls):.1f}" if walls else "n/a")
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    lines.append("Mean ± sample standard deviation (ddof=1) over the runs of each group.")
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
