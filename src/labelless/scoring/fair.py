"""FAIR's scores and losses as pure tensor functions (docs/methods/fair.md).

FAIR (Ali et al., WACV 2026) pseudo-labels an image by comparing its most relevant local crops
with learnable Class Description Anchors (CDA) and trains the visual encoder on the strong view:

    omega_n  = cos(cls(x_n), cls(x))                          Eq. 12, no softmax
    K        = TopK_n(omega_n, k)                             Eq. 13
    LAS(x,c) = sum_{n in K} omega_n cos(f(x_n), A_c) / sum_{n in K} omega_n    Eq. 14
    y_hat    = argmax_c LAS(x, c)                             (no gradient)
    w        = (s1 - s2) * (1 - cos(A_c1, A_c2)), mean 1 over the batch        Eq. 16 (ours)
    L_st     = mean_i w_i CE(cos(f(x^s_i), A) / tau, y_hat_i)                  Eq. 17
    L_fair   = -(1/C) sum_c log p_bar_c                       MUST's fairness term

Negative crop weights: a cosine can be negative (a crop unlike the whole image). The paper drops
the softmax but says nothing about the sign; a negative weight in Eq. 14 would *subtract* the
crop's evidence, so :func:`fair_crop_weights` clamps at 0 (``negative="clamp"``, the default) and
:func:`learned_alignment_score` adds ``eps`` to every kept weight, so an image whose kept crops all
have weight 0 falls back to the plain mean of its crops instead of dividing by zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

NegativeMode = Literal["clamp", "shift", "keep"]


def fair_crop_weights(
    crop_feats: torch.Tensor, global_feat: torch.Tensor, negative: NegativeMode = "clamp"
) -> torch.Tensor:
    """FAIR's crop relevance ``omega_n = cos(z(x_n), z(x))`` without softmax (Eq. 12).

    crop_feats ``(B, N, w)`` (the crops' [CLS] tokens, or projected embeddings),
    global_feat ``(B, w)`` -> weights ``(B, N)``.
    ``negative``: ``clamp`` -> ``max(omega, 0)`` (default); ``shift`` -> ``(omega + 1) / 2`` (in
    [0, 1], order preserved); ``keep`` -> raw cosines (may be negative).
    """
    z = F.normalize(crop_feats, dim=-1)  # (B, N, w)
    g = F.normalize(global_feat, dim=-1)  # (B, w)
    cos = torch.einsum("bnw,bw->bn", z, g)  # (B, N)
    if negative == "clamp":
        return cos.clamp_min(0.0)
    if negative == "shift":
        return (cos + 1.0) / 2.0
    if negative == "keep":
        return cos
    raise ValueError(f"negative must be clamp, shift or keep, got {negative!r}")


def wca_softmax_weights(
    crop_embeds: torch.Tensor, global_embed: torch.Tensor, image_scale: float = 4.0
) -> torch.Tensor:
    """WCA's crop weights ``softmax_n(exp(image_scale) cos(v, v_n))`` (ablation "WCA as PL").

    crop_embeds ``(B, N, d)``, global_embed ``(B, d)`` -> ``(B, N)`` summing to 1.
    """
    cos = torch.einsum("bnd,bd->bn", F.normalize(crop_embeds, dim=-1), F.normalize(global_embed, dim=-1))
    return torch.softmax(math.exp(image_scale) * cos, dim=-1)  # (B, N)


def select_topk(
    weights: torch.Tensor, feats: torch.Tensor, k: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the ``k`` crops of highest weight (Eq. 13); ``k=None`` or ``k >= N`` keeps all.

    weights ``(B, N)``, feats ``(B, N, d)`` -> ``(B, k)`` weights and ``(B, k, d)`` features.
    Ties are broken by crop index (``torch.topk`` on CPU and CUDA may order ties differently,
    the selected set of weights is the same).
    """
    n = weights.shape[1]
    if k is None or k >= n:
        return weights, feats
    idx = topk_index(weights, k)  # (B, k)
    w = weights.gather(1, idx)  # (B, k)
    f = feats.gather(1, idx.unsqueeze(-1).expand(-1, -1, feats.shape[-1]))  # (B, k, d)
    return w, f


def topk_index(weights: torch.Tensor, k: int | None) -> torch.Tensor:
    """Indices ``(B, k)`` of the crops :func:`select_topk` keeps (all ``N`` when ``k`` is None
    or ``k >= N``), in the same order. weights ``(B, N)``."""
    b, n = weights.shape
    if k is None or k >= n:
        return torch.arange(n, device=weights.device).expand(b, n)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return weights.topk(k, dim=1).indices  # (B, k)


def learned_alignment_score(
    crop_embeds: torch.Tensor, weights: torch.Tensor, anchors: torch.Tensor, eps: float = 1e-6
) -> torch.Tensor:
    """LAS (Eq. 14): the weighted mean cosine of the kept crops with every anchor.

    crop_embeds ``(B, K, d)``, weights ``(B, K)`` (>= 0; see the module docstring), anchors
    ``(C, d)`` (normalised here) -> scores ``(B, C)`` in [-1, 1] (cosine scale, no logit scale).
    ``LAS(x, c) = sum_n (w_n + eps) cos(v_n, A_c) / sum_n (w_n + eps)``.
    With ``K = 1`` and the global embedding this is plain ``cos(f(x), A_c)`` (FAIR-g).
    """
    v = F.normalize(crop_embeds, dim=-1)  # (B, K, d)
    a = F.normalize(anchors, dim=-1)  # (C, d)
    w = weights + eps  # (B, K)
    cos = torch.einsum("bkd,cd->bkc", v, a)  # (B, K, C)
    return torch.einsum("bk,bkc->bc", w, cos) / w.sum(dim=1, keepdim=True)  # (B, C)


def pseudo_label_weight(
    scores: torch.Tensor,
    anchors: torch.Tensor,
    margin: bool = True,
    ambiguity: bool = True,
    normalize: bool = True,
    eps: float = 1e-12,
    batch_mean: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Adaptive pseudo-label weight (Eq. 16, our reconstruction; docs/methods/fair.md).

    scores ``(B, C)`` (LAS), anchors ``(C, d)`` -> weights ``(B,)`` and the raw components.
    ``m_i = s1 - s2`` (top-1 minus top-2 score) and ``a_i = 1 - cos(A_c1, A_c2)`` (how distinct
    the two competing anchors are); ``w = m * a`` with either factor replaced by 1 when switched
    off, then divided by its batch mean (``normalize``) so the loss scale does not drift. A batch
    whose raw weights are all 0 (or a single class) gets weight 1 everywhere. ``batch_mean``
    maps the raw weights ``(B,)`` to the normaliser (default their mean; under torchrun the
    caller passes the mean over every rank's batch). Returns
    ``(w, {"margin": m, "ambiguity": a, "raw": m * a})``.
    """
    b, c = scores.shape
    if c < 2:
        ones = scores.new_ones(b)
        return ones, {"margin": ones, "ambiguity": ones, "raw": ones}
    top, idx = scores.topk(2, dim=1)  # (B, 2)
    m = top[:, 0] - top[:, 1]  # (B,)
    a_n = F.normalize(anchors, dim=-1)  # (C, d)
    amb = 1.0 - (a_n[idx[:, 0]] * a_n[idx[:, 1]]).sum(-1)  # (B,)
    raw = (m if margin else torch.ones_like(m)) * (amb if ambiguity else torch.ones_like(amb))
    w = raw
    if normalize:
        mean = raw.mean() if batch_mean is None else batch_mean(raw)
        w = raw / mean if float(mean) > eps else torch.ones_like(raw)
    return w, {"margin": m, "ambiguity": amb, "raw": raw}


def weighted_cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """``mean_i w_i CE(logits_i, y_i)`` (Eq. 17). logits ``(B, C)``, targets ``(B,)``, weights ``(B,)``."""
    ce = F.cross_entropy(logits, targets, reduction="none")  # (B,)
    if weights is None:
        return ce.mean()
    return (weights.to(ce.dtype) * ce).mean()


def fairness_loss(
    probs: torch.Tensor, running: torch.Tensor | None = None, momentum: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """MUST's fairness regulariser ``-(1/C) sum_c log p_bar_c`` (docs/methods/fair.md).

    probs ``(B, C)`` softmax outputs -> ``(loss, p_bar)`` with ``p_bar (C,)`` detached for the
    next call. ``momentum=0``: ``p_bar`` is the batch mean (DPA, FAIR's ``--reg_batch``) and
    ``running`` is ignored. ``momentum=m > 0`` (MUST's running form, ``engine_self_training.py``
    with m = 0.5): ``p_bar = m sg(running) + (1 - m) batch_mean``, or the batch mean when there is
    no running mean yet (``running=None``: MUST's first step of every epoch), and the loss is
    divided by ``1 - m`` on every step, the first included (MUST's ``/ 0.5``).
    """
    batch = probs.mean(dim=0)  # (C,)
    if momentum <= 0:
        p_bar, scale = batch, 1.0
    else:
        p_bar = batch if running is None else momentum * running.detach().to(batch) + (1.0 - momentum) * batch
        scale = 1.0 / (1.0 - momentum)
    loss = -torch.log(p_bar.clamp_min(1e-12)).mean() * scale
    return loss, p_bar.detach()


__all__ = [
    "fair_crop_weights",
    "fairness_loss",
    "learned_alignment_score",
    "pseudo_label_weight",
    "select_topk",
    "topk_index",
    "wca_softmax_weights",
    "weighted_cross_entropy",
]
