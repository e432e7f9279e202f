"""The runs a report shows, and the bounded selections of images it displays.

:func:`load_run` reads a run folder (``results.json`` + ``predictions.csv``) with errors that name
the broken file. The selection functions are pure: each takes the predictions once and keeps a
fixed number of rows per class or per pair (heaps, not sorts of the whole run), so a report of a
100k-image run opens only the few hundred images it shows.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labelless.errors import LabellessError
from labelless.eval.predictions import PREDICTIONS_FILENAME, Prediction, read_predictions
from labelless.eval.results import RESULTS_FILENAME, load_results

__all__ = [
    "ReportRun",
    "class_galleries",
    "confused_pairs",
    "changed_flows",
    "load_run",
    "run_names",
]


@dataclass
class ReportRun:
    """One run folder as the report sees it."""

    path: Path
    record: dict[str, Any]
    predictions: list[Prediction]
    classnames: list[str]
    name: str = ""
    label_free: dict[str, Any] = field(default_factory=dict)

    @property
    def has_labels(self) -> bool:
        return any(p.label is not None for p in self.predictions)

    @property
    def metrics(self) -> dict[str, Any] | None:
        return self.record.get("metrics") or None


def load_run(run_dir: str | Path) -> ReportRun:
    """Read ``run_dir``'s results and predictions; :class:`LabellessError` names what is wrong."""
    path = Path(run_dir)
    if not path.exists():
        raise LabellessError(f"run folder '{path}' does not exist")
    if path.is_file():
        if path.name in (RESULTS_FILENAME, PREDICTIONS_FILENAME):
            path = path.parent
        else:
            raise LabellessError(f"'{path}' is a file; pass the run folder that holds {RESULTS_FILENAME}")
    record = load_results(path)  # names the file when missing or broken
    label_free = record.get("label_free")
    if not isinstance(label_free, dict):
        raise LabellessError(
            f"'{path / RESULTS_FILENAME}' has no label_free diagnostics: the run was made by an "
            "older labelless; re-run it to get predictions and diagnostics"
        )
    preds = read_predictions(path / PREDICTIONS_FILENAME)
    classnames = list(label_free.get("classnames") or (record.get("metrics") or {}).get("classnames") or [])
    if not classnames:
        raise LabellessError(f"'{path / RESULTS_FILENAME}' does not list the class names (label_free.classnames)")
    known = set(classnames)
    for p in preds:
        for name in (p.predicted, p.label, p.zeroshot):
            if name is not None and name not in known:
                raise LabellessError(
                    f"'{path / PREDICTIONS_FILENAME}' line {p.index + 2}: class '{name}' is not a "
                    f"class of the run ({len(classnames)} classes in {RESULTS_FILENAME}); the two "
                    "files do not belong together"
                )
    return ReportRun(path=path, record=record, predictions=preds, classnames=classnames,
                     label_free=label_free)


def run_names(paths: Sequence[Path]) -> list[str]:
    """Short distinct display names: the folder name, or more of the path where names clash."""
    parts = [Path(p).resolve().parts for p in paths]
    depth = 1
    while True:
        names = ["/".join(pp[-depth:]) for pp in parts]
        if len(set(names)) == len(names) or depth >= max(len(pp) for pp in parts):
            return names
        depth += 1


def class_galleries(
    preds: Iterable[Prediction], classnames: Sequence[str], per_class: int
) -> dict[str, dict[str, list[Prediction]]]:
    """Per predicted class: its ``per_class`` most confident and its ``per_class`` borderline
    images (the smallest margin to the runner-up class; none repeated from the confident ones).

    Returns ``{class: {"confident": [...], "borderline": [...]}}`` for every class (empty lists
    for a class nothing was predicted as). One pass with two bounded heaps per class.
    """
    top: dict[str, list] = defaultdict(list)  # min-heaps of (confidence, -index, pred)
    low: dict[str, list] = defaultdict(list)  # min-heaps of (-margin, -index, pred)
    keep = 2 * per_class  # borderline candidates may overlap the confident ones
    for p in preds:
        item = (p.confidence, -p.index, p)
        h = top[p.predicted]
        if len(h) < per_class:
            heapq.heappush(h, item)
        elif item[:2] > h[0][:2]:
            heapq.heapreplace(h, item)
        item = (-p.margin, -p.index, p)
        h = low[p.predicted]
        if len(h) < keep:
            heapq.heappush(h, item)
        elif item[:2] > h[0][:2]:
            heapq.heapreplace(h, item)
    out = {}
    for c in classnames:
        confident = [t[2] for t in sorted(top.get(c, []), key=lambda t: t[:2], reverse=True)]
        taken = {p.index for p in confident}
        border = [t[2] for t in sorted(low.get(c, []), key=lambda t: t[:2], reverse=True) if t[2].index not in taken]
        out[c] = {"confident": confident, "borderline": border[:per_class]}
    return out


def _pair_examples(
    preds: Iterable[Prediction], key, top_pairs: int, per_pair: int
) -> list[dict[str, Any]]:
    """The ``top_pairs`` most frequent ``key(p)`` pairs (None = skip), each with its
    ``per_pair`` most confident examples."""
    counts: Counter = Counter()
    heaps: dict[tuple[str, str], list] = defaultdict(list)
    for p in preds:
        k = key(p)
        if k is None:
            continue
        counts[k] += 1
        item = (p.confidence, -p.index, p)
        h = heaps[k]
        if len(h) < per_pair:
            heapq.heappush(h, item)
        elif item[:2] > h[0][:2]:
            heapq.heapreplace(h, item)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_pairs]
    return [{"from": a, "to": b, "n": n,
             "examples": [t[2] for t in sorted(heaps[(a, b)], key=lambda t: t[:2], reverse=True)]}
            for (a, b), n in ranked]


def changed_flows(preds: Iterable[Prediction], top_pairs: int = 6, per_pair: int = 4) -> list[dict[str, Any]]:
    """The largest zero-shot -> run class changes, each with its most confident examples."""
    return _pair_examples(
        preds, lambda p: (p.zeroshot, p.predicted) if p.zeroshot is not None and p.zeroshot != p.predicted else None,
        top_pairs, per_pair)


def confused_pairs(preds: Iterable[Prediction], top_pairs: int = 6, per_pair: int = 4) -> list[dict[str, Any]]:
    """The most frequent true -> predicted mistakes (labelled images only), with examples."""
    return _pair_examples(
        preds, lambda p: (p.label, p.predicted) if p.label is not None and p.label != p.predicted else None,
        top_pairs, per_pair)
