"""Label-free diagnostics of a classifier's predictions: what a user can see without labels.

Every function here is pure and reads class probabilities only, never a label, so the values are
the same on an unlabeled folder and on a labelled benchmark (``tests/test_label_free.py`` replaces
every label by -1 and compares). :func:`label_free_diagnostics` assembles the ``label_free``
record of ``results.json``:

* the predicted-class histogram and its imbalance, beside the zero-shot reference's, so a
  collapse onto a few classes is visible;
* the max-softmax confidence: mean, quantiles and histogram;
* agreement with the zero-shot reference of the same backbone and class texts: the share of
  predictions that changed and the class-to-class flow of the changes;
* pseudo-label flips from epoch to epoch (methods that relabel while training log them);
* ``estimated_top1``, an accuracy estimate (:mod:`labelless.eval.estimators`), and every other
  registered estimate under ``estimates``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

__all__ = [
    "FLOW_TOP",
    "agreement",
    "class_balance",
    "confidence_summary",
    "label_free_diagnostics",
    "pseudo_label_flips",
]

#: the largest class-to-class changes kept in ``results.json`` (the report lists them)
FLOW_TOP = 50
_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
_CONF_BINS = 10


def class_balance(pred: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """Histogram of predicted classes and its imbalance.

    pred ``(N,)`` class indices. Returns ``counts`` (C ints), ``classes_used`` (classes
    predicted at least once), ``entropy`` (of the predicted-class shares, divided by ``log C``:
    1 = perfectly balanced, 0 = a single class), ``max_share``/``min_share`` in % of N.
    """
    C = int(num_classes)
    counts = torch.bincount(pred.long().flatten(), minlength=C)[:C].double()  # (C,)
    n = float(counts.sum())
    share = counts / n if n else counts  # (C,)
    nz = share[share > 0]
    ent = float(-(nz * nz.log()).sum())
    return {
        "counts": [int(c) for c in counts.tolist()],
        "classes_used": int((counts > 0).sum()),
        "entropy": ent / math.log(C) if C > 1 else 1.0,
        "max_share": 100.0 * float(share.max()) if n else None,
        "min_share": 100.0 * float(share.min()) if n else None,
    }


def confidence_summary(conf: torch.Tensor, bins: int = _CONF_BINS) -> dict[str, Any]:
    """Distribution of the max-softmax confidence ``conf`` ``(N,)`` in [0, 1].

    Returns ``mean``, ``quantiles`` ({"10": ..., "50": ...}) and ``histogram``: ``counts`` of
    ``bins`` equal bins over [0, 1] (``edges`` has bins + 1 values).
    """
    c = conf.double().flatten().clamp(0.0, 1.0)
    if c.numel() == 0:
        return {"mean": None, "quantiles": {}, "histogram": {"edges": [], "counts": []}}
    q = torch.quantile(c, torch.tensor(_QUANTILES, dtype=c.dtype))
    idx = (c * bins).long().clamp(max=bins - 1)  # (N,) bin of each sample; 1.0 in the last
    counts = torch.bincount(idx, minlength=bins)
    return {
        "mean": float(c.mean()),
        "quantiles": {str(round(100 * p)): float(v) for p, v in zip(_QUANTILES, q.tolist())},
        "histogram": {"edges": [i / bins for i in range(bins + 1)], "counts": counts.tolist()},
    }


def agreement(
    pred: torch.Tensor, ref_pred: torch.Tensor, classnames: Sequence[str], top: int = FLOW_TOP
) -> dict[str, Any]:
    """How the predictions ``pred`` ``(N,)`` differ from the reference's ``ref_pred`` ``(N,)``.

    Returns ``agree`` and ``changed`` (% of N), ``n_changed`` and ``flow``: the ``top`` largest
    class-to-class changes ``{"from": reference class, "to": new class, "n": count}``, largest
    first (``flow_pairs`` counts all distinct pairs).
    """
    C = len(classnames)
    pred, ref_pred = pred.long().flatten(), ref_pred.long().flatten()
    if pred.shape != ref_pred.shape:
        raise ValueError(f"{pred.shape[0]} predictions against {ref_pred.shape[0]} reference predictions")
    n = pred.numel()
    changed = pred != ref_pred  # (N,)
    pairs = torch.bincount(ref_pred[changed] * C + pred[changed], minlength=C * C)  # (C*C,)
    nz = pairs.nonzero().flatten()
    order = nz[torch.argsort(pairs[nz], descending=True, stable=True)][:top]
    flow = [{"from": classnames[int(i) // C], "to": classnames[int(i) % C], "n": int(pairs[i])} for i in order]
    n_changed = int(changed.sum())
    return {
        "agree": 100.0 * (n - n_changed) / n if n else None,
        "changed": 100.0 * n_changed / n if n else None,
        "n_changed": n_changed,
        "flow": flow,
        "flow_pairs": int(nz.numel()),
    }


def pseudo_label_flips(history: Sequence[dict] | None) -> list[dict[str, Any]] | None:
    """The ``pl_flips`` rows a training history logged (:class:`~labelless.engine.pseudo.FlipTracker`).

    Returns ``[{"epoch" or "stage": ..., "flips": n, "rate": % of samples labelled in both}]``,
    or ``None`` when the method does not relabel while training.
    """
    rows = []
    for r in history or []:
        if r.get("pl_flips") is None:
            continue
        row = {k: r[k] for k in ("stage", "epoch") if r.get(k) is not None}
        row.update(flips=int(r["pl_flips"]), rate=r.get("pl_flip_rate"))
        rows.append(row)
    return rows or None


def label_free_diagnostics(
    probs: torch.Tensor,
    ref_probs: torch.Tensor | None,
    classnames: Sequence[str],
    history: Sequence[dict] | None = None,
    estimator: str | None = None,
) -> dict[str, Any]:
    """The ``label_free`` record of one run.

    probs ``(N, C)``: the run's class probabilities on the images it predicts on; ref_probs
    ``(N, C)``: the zero-shot reference's on the same images (None: no reference, and no
    agreement or reference-based estimate); history: the training history (for pseudo-label
    flips); estimator: the registered estimator behind ``estimated_top1`` (default
    :data:`~labelless.eval.estimators.DEFAULT_ESTIMATOR`).
    """
    from labelless.eval.estimators import DEFAULT_ESTIMATOR, all_estimates

    C = len(classnames)
    if probs.ndim != 2 or probs.shape[1] != C:
        raise ValueError(f"probs must be (N, {C}), got {tuple(probs.shape)}")
    conf, pred = probs.max(dim=1)  # (N,), (N,)
    out: dict[str, Any] = {
        "n": int(probs.shape[0]),
        "classnames": [str(c) for c in classnames],
        "predicted_classes": class_balance(pred, C),
        "confidence": confidence_summary(conf),
    }
    if ref_probs is not None:
        if ref_probs.shape != probs.shape:
            raise ValueError(f"reference probs {tuple(ref_probs.shape)} != probs {tuple(probs.shape)}")
        ref_conf, ref_pred = ref_probs.max(dim=1)
        out["zeroshot_classes"] = class_balance(ref_pred, C)
        out["zeroshot_confidence"] = confidence_summary(ref_conf)
        out["agreement"] = agreement(pred, ref_pred, classnames)
    out["pseudo_label_flips"] = pseudo_label_flips(history)
    name = estimator or DEFAULT_ESTIMATOR
    estimates = all_estimates(probs, ref_probs)
    out["estimator"] = name
    out["estimated_top1"] = estimates.get(name)
    out["estimates"] = estimates
    return out
