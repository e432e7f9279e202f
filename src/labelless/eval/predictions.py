"""A run's per-image predictions: ``predictions.csv`` beside ``results.json``.

One row per image the run predicted on, in data-set order::

    path,label,predicted,confidence,margin,zeroshot,zeroshot_confidence,top5

``label`` is the true class name or empty (unknown); ``confidence`` the max softmax probability;
``margin`` its gap to the runner-up (small = borderline); ``zeroshot``/``zeroshot_confidence``
the zero-shot reference's prediction on the same image (empty without a reference); ``top5``
``class:prob`` pairs joined by ``;``. It is what ``labelless report`` reads: the report never
re-runs a model, and it opens only the images it shows.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from labelless.errors import LabellessError
from labelless.utils.io import atomic_save

__all__ = ["PREDICTIONS_FILENAME", "Prediction", "read_predictions", "write_predictions"]

PREDICTIONS_FILENAME = "predictions.csv"
COLUMNS = ("path", "label", "predicted", "confidence", "margin", "zeroshot", "zeroshot_confidence", "top5")


@dataclass
class Prediction:
    """One row of ``predictions.csv`` (class names, probabilities in [0, 1])."""

    index: int
    path: str
    label: str | None
    predicted: str
    confidence: float
    margin: float
    zeroshot: str | None
    zeroshot_confidence: float | None


def write_predictions(
    path: str | os.PathLike,
    paths: Sequence[str],
    labels: torch.Tensor | None,
    probs: torch.Tensor,
    ref_probs: torch.Tensor | None,
    classnames: Sequence[str],
    topk: int = 5,
) -> Path:
    """Write ``predictions.csv`` atomically.

    paths: N image paths; labels ``(N,)`` (-1 unknown) or None; probs ``(N, C)`` the run's
    class probabilities; ref_probs ``(N, C)`` the zero-shot reference's, or None.
    """
    n, C = probs.shape
    if len(paths) != n:
        raise ValueError(f"{len(paths)} paths for {n} rows of probabilities")
    k = min(topk, C)
    top_p, top_i = probs.float().topk(k, dim=1)  # (N, k)
    second = top_p[:, 1] if k > 1 else torch.zeros(n)
    margin = top_p[:, 0] - second  # (N,)
    ref = ref_probs.float().max(dim=1) if ref_probs is not None else None
    labels_list = labels.tolist() if labels is not None else [-1] * n

    def write(p: Path) -> None:
        with open(p, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            for i in range(n):
                y = labels_list[i]
                ti, tp = top_i[i].tolist(), top_p[i].tolist()
                w.writerow([
                    paths[i],
                    classnames[y] if y >= 0 else "",
                    classnames[ti[0]],
                    f"{tp[0]:.5f}",
                    f"{float(margin[i]):.5f}",
                    classnames[int(ref.indices[i])] if ref is not None else "",
                    f"{float(ref.values[i]):.5f}" if ref is not None else "",
                    ";".join(f"{classnames[j]}:{q:.4f}" for j, q in zip(ti, tp)),
                ])

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(out, write)
    return out


def _float(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise LabellessError(f"{where}: '{text}' is not a number; the file is damaged, re-run the run") from None


def read_predictions(path: str | os.PathLike) -> list[Prediction]:
    """All rows of a ``predictions.csv`` (a run folder is accepted too).

    Raises :class:`~labelless.errors.LabellessError` naming the file when it is missing or
    damaged.
    """
    p = Path(path)
    if p.is_dir():
        p = p / PREDICTIONS_FILENAME
    if not p.is_file():
        raise LabellessError(
            f"no predictions at '{p}': the run folder lacks {PREDICTIONS_FILENAME} (runs made "
            "before labelless wrote it, or a run that did not finish); re-run it"
        )
    rows: list[Prediction] = []
    try:
        with open(p, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise LabellessError(
                    f"'{p}' is not a labelless predictions file (missing column(s) {', '.join(missing)})"
                )
            for i, r in enumerate(reader):
                where = f"'{p}' line {i + 2}"
                if r.get("predicted") in (None, "") or r.get("confidence") in (None, ""):
                    raise LabellessError(f"{where}: empty prediction; the file is damaged, re-run the run")
                zc = r.get("zeroshot_confidence") or ""
                rows.append(Prediction(
                    index=i, path=r["path"], label=r["label"] or None, predicted=r["predicted"],
                    confidence=_float(r["confidence"], where), margin=_float(r["margin"], where),
                    zeroshot=r["zeroshot"] or None,
                    zeroshot_confidence=_float(zc, where) if zc else None,
                ))
    except UnicodeDecodeError as e:
        raise LabellessError(f"'{p}' is not a text CSV file ({e}); re-run the run") from None
    except csv.Error as e:
        raise LabellessError(f"'{p}' is not a valid CSV file ({e}); re-run the run") from None
    return rows
