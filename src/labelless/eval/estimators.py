"""Label-free accuracy estimators: top-1 from class probabilities alone.

Each estimator is a pure function ``(probs, ref) -> top-1 in % (or None)`` of

* ``probs`` ``(N, C)``: the run's class probabilities on its N images (softmax of its logits);
* ``ref`` ``(N, C)``: the zero-shot reference's on the same images (the same backbone before
  adaptation, scoring the mean embedding of each class's texts at the backbone's learned logit
  scale), or None.

These are all a user has on an unlabeled folder. Every estimator registered in
:data:`ESTIMATORS` is recorded in ``results.json`` (``label_free.estimates``);
:data:`DEFAULT_ESTIMATOR` is the one behind ``label_free.estimated_top1``. The choice and the
assumptions behind each are in ``docs/label-free-evaluation.md``; ``labelless aggregate`` measures
every recorded estimator wherever labels exist.
"""

from __future__ import annotations

import torch

from labelless.registry import ESTIMATORS

__all__ = ["DEFAULT_ESTIMATOR", "MAX_IMAGES", "all_estimates", "prior_matched", "prior_weights",
           "temper_like"]

DEFAULT_ESTIMATOR = "zs_balanced"


#: estimators that transform the whole (N, C) posterior work on a fixed random subset of at most
#: this many images (their value is a mean over images: 20k keep its standard error below 0.4
#: points, and a 1000-class run stays within memory and seconds)
MAX_IMAGES = 20_000


def _check(probs: torch.Tensor, ref: torch.Tensor | None) -> None:
    if probs.ndim != 2:
        raise ValueError(f"probs must be (N, C), got {tuple(probs.shape)}")
    if ref is not None and ref.shape != probs.shape:
        raise ValueError(f"ref {tuple(ref.shape)} must match probs {tuple(probs.shape)}")


def _subset(*tensors: torch.Tensor, max_n: int = MAX_IMAGES) -> tuple[torch.Tensor, ...]:
    """The same fixed random rows of every tensor when there are more than ``max_n``."""
    n = tensors[0].shape[0]
    if n <= max_n:
        return tensors
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:max_n]
    return tuple(t[idx] for t in tensors)


@ESTIMATORS.register("ac")
def average_confidence(probs: torch.Tensor, ref: torch.Tensor | None = None) -> float | None:
    """Average max-softmax confidence of the run (Hendrycks & Gimpel 2017; ATC's baseline).

    ``mean_i max_k probs[i, k]``. Exact when the run's classifier is calibrated; it inherits the
    classifier's temperature (a zero-shot classifier at logit scale 100, or a self-trained one,
    is over-confident and over-estimates).
    """
    _check(probs, ref)
    if probs.shape[0] == 0:
        return None
    return 100.0 * float(probs.max(dim=1).values.double().mean())


@ESTIMATORS.register("zs_posterior")
def zeroshot_posterior(probs: torch.Tensor, ref: torch.Tensor | None) -> float | None:
    """The zero-shot model's probability that the run's prediction is right, averaged.

    ``mean_i ref[i, argmax_k probs[i, k]]``: the expected accuracy of the run's predictions if
    the zero-shot posterior were the truth. Uses only the run's argmax (blind to its
    temperature). Exact when the zero-shot reference is calibrated and the run's changes carry
    no information the reference lacks; it under-credits an adaptation that fixes zero-shot
    mistakes and inherits the reference's over-confidence.
    """
    _check(probs, ref)
    if ref is None or probs.shape[0] == 0:
        return None
    pred = probs.argmax(dim=1, keepdim=True)  # (N, 1)
    return 100.0 * float(ref.gather(1, pred).double().mean())


@ESTIMATORS.register("ensemble_posterior")
def ensemble_posterior(probs: torch.Tensor, ref: torch.Tensor | None) -> float | None:
    """The averaged posterior ``(probs + ref) / 2`` of the run's prediction, averaged.

    ``mean_i (probs + ref)[i, argmax_k probs[i, k]] / 2``: exact when the two-model ensemble is
    calibrated (the assumption behind disagreement-based estimators, Jiang et al. ICLR 2022). It
    sits between ``ac`` (too high for an over-confident run) and ``zs_posterior`` (too low for a
    run that fixes zero-shot mistakes).
    """
    _check(probs, ref)
    if ref is None or probs.shape[0] == 0:
        return None
    pred = probs.argmax(dim=1, keepdim=True)
    return 100.0 * float(((probs.gather(1, pred) + ref.gather(1, pred)) / 2).double().mean())


def prior_weights(ref: torch.Tensor, prior: torch.Tensor | None = None, iters: int = 500,
                  tol: float = 1e-6) -> torch.Tensor:
    """Class weights ``w`` ``(C,)`` that match the zero-shot posterior to the class prior.

    A calibrated posterior averages to the class prior over the images (``mean_i q[i, k] =
    prior[k]``, the law of total probability); an over-confident zero-shot model piles its mass
    onto a few "attractor" classes and violates it. The closest posterior (in KL, image by
    image) that satisfies it rescales each class, ``q[i, k] = ref[i, k] w[k] / sum_j ref[i, j]
    w[j]`` (Saerens et al., Neural Computation 2002, with the prior known instead of
    estimated). ``w`` comes from Sinkhorn's alternating normalisation (iterative proportional
    fitting: two matrix-vector products per round), until every class mass is within ``tol * N``
    of its target. prior ``(C,)``: the class shares (None: uniform, the assumption when nothing
    is known).
    """
    n, C = ref.shape
    p = ref.double()
    target = torch.full((C,), n / C, dtype=p.dtype) if prior is None else n * prior.double() / prior.sum()
    w = torch.ones(C, dtype=p.dtype)
    for _ in range(iters):
        s = (p @ w).clamp_min(1e-300)  # (N,) row normalisers
        col = w * (p.T @ (1.0 / s))  # (C,) the class masses of the current q
        if float((col - target).abs().max()) <= tol * n:
            break
        w = w * target / col.clamp_min(1e-300)
        w = w / w.max()  # the scale of w is free: keep it in range
    return w


def prior_matched(ref: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
    """The prior-matched posterior ``q`` ``(N, C)`` (see :func:`prior_weights`)."""
    q = ref.double() * prior_weights(ref, prior)
    return q / q.sum(dim=1, keepdim=True).clamp_min(1e-300)


def _matched_at(ref: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """``q[i, pred_i]`` ``(N,)`` without building ``q``."""
    w = prior_weights(ref)
    p = ref.double()
    return p.gather(1, pred[:, None]).squeeze(1) * w[pred] / (p @ w).clamp_min(1e-300)


@ESTIMATORS.register("zs_balanced")
def zeroshot_balanced(probs: torch.Tensor, ref: torch.Tensor | None) -> float | None:
    """The prior-matched zero-shot posterior of the run's prediction, averaged (the default).

    ``mean_i q[i, argmax_k probs[i, k]]`` with ``q = prior_matched(ref)`` (uniform class
    prior): ``zs_posterior`` after removing the zero-shot model's excess mass on the classes it
    over-predicts. Assumes roughly balanced classes and a reference whose errors show up as
    class imbalance; blind to the run's temperature.
    """
    _check(probs, ref)
    if ref is None or probs.shape[0] == 0:
        return None
    probs, ref = _subset(probs, ref)
    return 100.0 * float(_matched_at(ref, probs.argmax(dim=1)).mean())


def temper_like(probs: torch.Tensor, ref: torch.Tensor, max_fit: int = 5_000) -> torch.Tensor:
    """``probs`` re-tempered ``(N, C)`` so its mean max-probability equals ``ref``'s.

    ``softmax(beta * log probs)`` with ``beta`` found by bisection (on at most ``max_fit``
    images): the run's opinions on the reference's confidence scale, so that a classifier's
    arbitrary logit scale (100 for a zero-shot head, sharpened by self-training) does not decide
    how much its opinion weighs.
    """
    logp = probs.double().clamp_min(1e-300).log()  # (N, C)
    fit = _subset(logp, max_n=max_fit)[0]
    target = float(ref.double().max(dim=1).values.mean())
    lo, hi = -7.0, 7.0  # log beta
    for _ in range(50):
        mid = (lo + hi) / 2
        if float((fit * torch.exp(torch.tensor(mid))).softmax(dim=1).max(dim=1).values.mean()) > target:
            hi = mid
        else:
            lo = mid
    return (logp * torch.exp(torch.tensor((lo + hi) / 2))).softmax(dim=1)


@ESTIMATORS.register("ens_balanced")
def ensemble_balanced(probs: torch.Tensor, ref: torch.Tensor | None) -> float | None:
    """Like ``zs_balanced``, with the run's own opinion averaged into the posterior.

    ``mean_i q[i, pred_i]`` with ``q = prior_matched((ref + temper_like(probs, ref)) / 2)``: the
    run's softmax brought to the reference's confidence level (:func:`temper_like`), averaged
    with the reference, matched to a uniform prior. It credits a run's confident departures from
    zero-shot that ``zs_balanced`` under-credits, and credits a confidently wrong classifier
    more. Assumes what ``zs_balanced`` does, and that the run is as well calibrated as the
    reference once on its confidence scale.
    """
    _check(probs, ref)
    if ref is None or probs.shape[0] == 0:
        return None
    probs, ref = _subset(probs, ref)
    mix = (ref.double() + temper_like(probs, ref)) / 2  # (N, C)
    return 100.0 * float(_matched_at(mix, probs.argmax(dim=1)).mean())


@ESTIMATORS.register("atc_balanced")
def atc_balanced(probs: torch.Tensor, ref: torch.Tensor | None) -> float | None:
    """ATC (Garg et al. ICLR 2022) with the images where run and zero-shot agree as its source.

    ATC fits a threshold ``t`` on the run's confidence so that, on labelled source data, the
    share of images above ``t`` equals the accuracy, then reports the share above ``t`` on the
    target. Here the source is the agreement set ``S = {i: argmax probs = argmax ref}`` and its
    accuracy the prior-matched zero-shot posterior ``mean_{i in S} q[i, pred_i]``; the threshold
    is on the run's own confidence scale, so images where the run departs from zero-shot count
    as right when the run is as sure of them as of the agreed ones.
    """
    _check(probs, ref)
    if ref is None or probs.shape[0] == 0:
        return None
    probs, ref = _subset(probs, ref)
    conf, pred = probs.double().max(dim=1)
    agree = pred == ref.argmax(dim=1)
    if not bool(agree.any()):
        return 0.0
    acc_s = float(_matched_at(ref, pred)[agree].mean())
    # the (1 - acc_s) quantile of the source confidences: a share acc_s of S lies above it
    t = torch.quantile(conf[agree], min(max(1.0 - acc_s, 0.0), 1.0))
    return 100.0 * float((conf >= t).double().mean())


@ESTIMATORS.register("cot")
def confidence_optimal_transport(
    probs: torch.Tensor, ref: torch.Tensor | None = None, eps: float = 0.01, iters: int = 200,
    max_n: int = 20_000,
) -> float | None:
    """COT (Lu et al. NeurIPS 2023) with a uniform class prior.

    ``1 - W(probs, uniform one-hot labels)`` with the cost ``1 - probs[i, k]`` of giving image
    i the label k: like ``ac``, but the labels must be spread evenly over the classes, so a run
    that piles its predictions onto a few classes is charged for it. Entropic transport
    (Sinkhorn, ``eps``) on at most ``max_n`` images (a fixed random subset above that).
    Assumes balanced classes; inherits the run's temperature.
    """
    _check(probs, ref)
    n, C = probs.shape
    if n == 0:
        return None
    (p,) = _subset(probs, max_n=max_n)
    p = p.double()
    n = p.shape[0]
    cost = 1.0 - p  # (n, C), in [0, 1]
    K = torch.exp(-cost / eps)  # (n, C) Gibbs kernel, >= e^-100 for eps = 0.01
    u = torch.full((n,), 1.0 / n, dtype=p.dtype)
    v = torch.ones(C, dtype=p.dtype)
    for _ in range(iters):  # Sinkhorn: rows sum to 1/n, columns to 1/C
        u = (1.0 / n) / (K @ v).clamp_min(1e-300)
        v = (1.0 / C) / (K.T @ u).clamp_min(1e-300)
    total = float(u @ ((K * cost) @ v))  # sum of plan * cost
    return 100.0 * (1.0 - total) if total == total else None


def all_estimates(probs: torch.Tensor, ref: torch.Tensor | None) -> dict[str, float | None]:
    """Every registered estimator on ``probs`` ``(N, C)`` and ``ref`` ``(N, C)`` or None."""
    return {name: fn(probs, ref) for name, fn in ESTIMATORS.items()}
