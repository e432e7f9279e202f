"""Classification metrics as pure functions on tensors.

Samples whose label is ``-1`` (unknown, e.g. an unlabeled image folder) are ignored by every
metric and counted in :attr:`Metrics.n_unlabeled`. Percentages are in ``[0, 100]``; a metric that
is undefined (top-5 with fewer than 5 classes or without logits, per-class accuracy of a class
absent from the labels, anything on zero labelled samples) is ``NaN`` in Python and ``null`` in
JSON.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["Metrics", "classification_metrics"]


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.1f}%"


def _nan_to_none(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def _none_to_nan(x: Any) -> float:
    return float("nan") if x is None else float(x)


@dataclasses.dataclass
class Metrics:
    """Classification metrics of one evaluation.

    Attributes:
        top1: top-1 accuracy in %, over labelled samples.
        top5: top-5 accuracy in %; NaN with fewer than 5 classes or when only hard
            predictions were given.
        mean_per_class: mean of per-class recall over the classes present in the labels, in %.
        per_class: ``{classname: recall in %}``; NaN for classes absent from the labels.
        confusion: ``(C, C)`` nested list of ints, rows = true class, columns = predicted.
        n: number of labelled samples used.
        n_unlabeled: number of samples with label ``-1`` that were ignored.
        classnames: the ``C`` class names, in index order.
    """

    top1: float
    top5: float
    mean_per_class: float
    per_class: dict[str, float]
    confusion: list[list[int]]
    n: int
    n_unlabeled: int = 0
    classnames: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (NaN becomes ``None``)."""
        return {
            "top1": _nan_to_none(self.top1),
            "top5": _nan_to_none(self.top5),
            "mean_per_class": _nan_to_none(self.mean_per_class),
            "n": int(self.n),
            "n_unlabeled": int(self.n_unlabeled),
            "per_class": {k: _nan_to_none(v) for k, v in self.per_class.items()},
            "classnames": list(self.classnames),
            "confusion": [list(map(int, row)) for row in self.confusion],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Metrics:
        """Inverse of :meth:`to_dict` (``None`` becomes NaN)."""
        return cls(
            top1=_none_to_nan(d.get("top1")),
            top5=_none_to_nan(d.get("top5")),
            mean_per_class=_none_to_nan(d.get("mean_per_class")),
            per_class={k: _none_to_nan(v) for k, v in (d.get("per_class") or {}).items()},
            confusion=[list(map(int, row)) for row in (d.get("confusion") or [])],
            n=int(d.get("n", 0)),
            n_unlabeled=int(d.get("n_unlabeled", 0)),
            classnames=list(d.get("classnames") or []),
        )

    def summary(self) -> str:
        """One line, e.g. ``top-1 53.2%  top-5 91.0%  mean/class 52.8%  (n=8100)``."""
        s = (
            f"top-1 {_pct(self.top1)}  top-5 {_pct(self.top5)}  "
            f"mean/class {_pct(self.mean_per_class)}  (n={self.n})"
        )
        if self.n_unlabeled:
            s += f"  [{self.n_unlabeled} unlabeled ignored]"
        return s


def classification_metrics(
    logits_or_pred: torch.Tensor | Sequence,
    labels: torch.Tensor | Sequence,
    num_classes: int,
    classnames: Sequence[str] | None = None,
) -> Metrics:
    """Top-1/top-5/mean-per-class accuracy, per-class recall and the confusion matrix.

    Args:
        logits_or_pred: ``(N, C)`` scores (logits or probabilities; higher = more likely), or
            ``(N,)`` integer predicted class indices. Top-5 needs scores.
        labels: ``(N,)`` integer true class indices; ``-1`` marks an unknown label and the
            sample is ignored.
        num_classes: ``C``.
        classnames: ``C`` names used as keys of ``per_class``; defaults to ``"0".."C-1"``.

    Raises ``ValueError`` for inconsistent shapes or out-of-range labels/predictions.
    """
    scores = torch.as_tensor(logits_or_pred).detach().cpu()
    labels = torch.as_tensor(labels).detach().cpu().long()
    C = int(num_classes)
    if C < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    names = [str(c) for c in classnames] if classnames is not None else [str(i) for i in range(C)]
    if len(names) != C:
        raise ValueError(f"got {len(names)} class names for num_classes={C}")
    if len(set(names)) != C:
        raise ValueError("class names must be unique")
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {tuple(labels.shape)}")
    if scores.ndim == 2:
        if scores.shape != (labels.shape[0], C):
            raise ValueError(
                f"logits shape {tuple(scores.shape)} does not match (N={labels.shape[0]}, C={C})"
            )
        pred = scores.argmax(dim=1)  # (N,)
    elif scores.ndim == 1:
        if scores.shape[0] != labels.shape[0]:
            raise ValueError(f"{scores.shape[0]} predictions for {labels.shape[0]} labels")
        if scores.is_floating_point():
            raise ValueError("1-D predictions must be integer class indices, got floats")
        pred = scores.long()
    else:
        raise ValueError(
            f"expected (N, C) logits or (N,) predictions, got shape {tuple(scores.shape)}"
        )

    bad = (labels < -1) | (labels >= C)
    if bad.any():
        raise ValueError(f"labels must be in [-1, {C - 1}], found {labels[bad][0].item()}")
    known = labels >= 0  # (N,)
    n_unlabeled = int((~known).sum())
    y = labels[known]  # (n,)
    p = pred[known]  # (n,)
    if ((p < 0) | (p >= C)).any():
        raise ValueError(f"predictions must be in [0, {C - 1}]")
    n = int(y.numel())

    # Confusion matrix via bincount of flattened (true, pred) pairs; rows = true, cols = pred.
    cm = torch.bincount(y * C + p, minlength=C * C).reshape(C, C)  # (C, C)
    support = cm.sum(dim=1)  # (C,) samples per true class
    correct = cm.diagonal()  # (C,)

    nan = float("nan")
    top1 = 100.0 * correct.sum().item() / n if n else nan
    if scores.ndim == 2 and C >= 5 and n:
        top5_idx = scores[known].topk(5, dim=1).indices  # (n, 5)
        top5 = 100.0 * (top5_idx == y[:, None]).any(dim=1).float().mean().item()
    else:
        top5 = nan
    recall = [
        100.0 * correct[c].item() / support[c].item() if support[c] > 0 else nan for c in range(C)
    ]
    present = [r for r in recall if not math.isnan(r)]
    mean_per_class = sum(present) / len(present) if present else nan
    return Metrics(
        top1=top1,
        top5=top5,
        mean_per_class=mean_per_class,
        per_class=dict(zip(names, recall)),
        confusion=cm.tolist(),
        n=n,
        n_unlabeled=n_unlabeled,
        classnames=names,
    )
