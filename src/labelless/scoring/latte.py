"""LaTTe-CLIP's pure tensor functions (Cao et al., WACV 2025; official code astra-vision/LatteCLIP
@ 4b7d879, see docs/methods/latteclip.md).

* :func:`mixer_weights`: the dynamic feature mixer's weight of each text, top-1 minus top-2
  cosine similarity to the prototypes (paper Eq. 1), plus 1e-6 as in ``compute_text_weights``.
* :func:`mix_texts`: the weighted mean of a sample's texts (not re-normalised, as the code).
* :func:`prototype_text`: ``t = (1 - alpha) P_y + alpha * t_bar`` (code ``--alpha 0.01``; the
  paper writes the same thing with its alpha = 0.99 on the prototype, Eq. 2).
* :func:`prototype_update`: the official update, the normalised mean of the mixed texts per
  class (an EMA with mu = 1 - alpha); :func:`momentum_update` the paper's explicit form with a
  free mu (mu = 0 is Table 3's "w/o momentum update").
* :func:`clip_contrastive_loss`: OpenCLIP's symmetric InfoNCE over the batch (Eq. 3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MIXER_EPS = 1e-6


def mixer_weights(
    texts: torch.Tensor, prototypes: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Dynamic-feature-mixer weights ``top1_c <t, P_c> - top2_c <t, P_c> + 1e-6``.

    texts: (B, K, d) text embeddings (K texts per sample), L2-normalised.
    prototypes: (C, d) class prototypes (normalised here), C >= 2.
    mask: (B, K) bool, False where a text is absent (weight 0).
    Returns (B, K) fp32 weights, detached (the code never back-propagates through them); fp32
    whatever the texts' dtype, so that bf16 texts do not round the margins.
    """
    with torch.no_grad():
        P = F.normalize(prototypes.float(), dim=-1)  # (C, d)
        sims = texts.detach().float() @ P.T  # (B, K, C)
        top2 = sims.topk(2, dim=-1).values  # (B, K, 2)
        w = top2[..., 0] - top2[..., 1] + MIXER_EPS  # (B, K)
        if mask is not None:
            w = w * mask.to(w.dtype)
    return w


def mix_texts(texts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean ``t_bar = sum_k w_k t_k / sum_k w_k``.

    texts: (B, K, d); weights: (B, K) >= 0 with a positive sum per row. Returns (B, d).
    """
    w = weights.unsqueeze(-1)  # (B, K, 1)
    return (w * texts).sum(dim=1) / w.sum(dim=1).clamp_min(1e-12)  # (B, d)


def prototype_text(proto_y: torch.Tensor, t_bar: torch.Tensor, alpha: float) -> torch.Tensor:
    """Prototype-text embedding ``(1 - alpha) * P_y + alpha * t_bar``.

    proto_y: (B, d) the prototype of each sample's pseudo-label (no grad: a bank entry);
    t_bar: (B, d) mixed text (carries the text tower's gradient). Returns (B, d).
    """
    return proto_y + alpha * (t_bar - proto_y)


def prototype_update(bank: torch.Tensor, mixed: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Official update: ``P_c <- normalize(mean{t_i : y_i = c})`` for every class in ``labels``.

    bank: (C, d); mixed: (N, d) prototype-text embeddings t_i (each 0.99 P + 0.01 t_bar, so this
    is an EMA with mu = 0.99); labels: (N,) long. Returns a new (C, d) bank (rows of absent
    classes unchanged). No grad.
    """
    with torch.no_grad():
        C = bank.shape[0]
        mixed = mixed.detach().to(bank.dtype)
        sums = torch.zeros_like(bank).index_add_(0, labels, mixed)  # (C, d)
        counts = torch.bincount(labels, minlength=C).to(bank.dtype)  # (C,)
        present = counts > 0
        new = bank.clone()
        new[present] = F.normalize(sums[present] / counts[present, None], dim=-1)
    return new


def momentum_update(
    bank: torch.Tensor, t_bar: torch.Tensor, labels: torch.Tensor, momentum: float
) -> torch.Tensor:
    """Paper form: ``P_c <- normalize(mu P_c + (1 - mu) mean{t_bar_i : y_i = c})``.

    bank: (C, d); t_bar: (N, d) mixed texts; labels: (N,); momentum mu in [0, 1] (0: replace the
    prototype by the batch mean, Table 3 "w/o momentum update"). Returns a new (C, d) bank.
    """
    with torch.no_grad():
        C = bank.shape[0]
        t_bar = t_bar.detach().to(bank.dtype)
        sums = torch.zeros_like(bank).index_add_(0, labels, t_bar)
        counts = torch.bincount(labels, minlength=C).to(bank.dtype)
        present = counts > 0
        new = bank.clone()
        mean = sums[present] / counts[present, None]
        new[present] = F.normalize(momentum * bank[present] + (1 - momentum) * mean, dim=-1)
    return new


def clip_contrastive_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE (OpenCLIP ``ClipLoss``): ``(CE(s I T^T, id) + CE(s T I^T, id)) / 2``.

    image: (B, d), text: (B, d) paired row by row (same-class rows are negatives, as in the
    code); scale: ``exp(logit_scale)`` (scalar). Returns a scalar.
    """
    logits = scale * image @ text.T  # (B, B)
    target = torch.arange(image.shape[0], device=image.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
