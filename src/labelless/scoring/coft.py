"""CoFT / DeFT pure tensor functions: cleanliness, dual-prompt losses, collaboration, MoCo.

Provenance (see ``docs/methods/coft.md`` and docs/methods/coft.md):

* DeFT (VERIFIED, ``HotanLee/DeFT@dafcc14:main_phase1.py``): per-class two-way softmax between
  the positive and the negative prompt's logits, ``p_yes_c = e^{sg(s+_c)} / (e^{sg(s+_c)} +
  e^{s-_c})``; a sample is clean iff ``p_yes_y > 0.5``; ``L_cls = CE(s+, y)`` (all samples during
  warm-up, clean ones afterwards); ``L_neg = -log p_no_{ybar} - log p_yes_{y'}`` with ``ybar`` a
  random complementary label and ``y' = y`` (warm-up / clean) or ``argmax s+`` (unclean).
* CoFT (abstract, VERIFIED wording): the cleanliness is "sample-dependent" with no hand-crafted
  threshold; two models "filter ... for each other". The concrete collaboration rule
  (:func:`collaborate`) and the per-class high-confidence selection are OUR reconstruction.
* CoFT+ momentum contrast (:func:`moco_loss`): the abstract names "momentum contrastive
  learning" only; the MoCo-v2 InfoNCE with an optional pseudo-label-supervised positive set is
  OUR choice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Collaboration outcome codes returned by :func:`collaborate`.
DROPPED, CONFIRMED, RELABELLED = 0, 1, 2


def clean_probability(s_pos: torch.Tensor, s_neg: torch.Tensor, detach_pos: bool = True) -> torch.Tensor:
    """Per-class cleanliness ``p_yes (B, C) = softmax([s+_c, s-_c])[0] = sigmoid(s+_c - s-_c)``.

    s_pos, s_neg: ``(B, C)`` scaled cosine logits of the positive and negative prompts.
    detach_pos: DeFT stops the gradient of ``s+`` here (only the negative prompt learns the
        threshold); VERIFIED.
    """
    sp = s_pos.detach() if detach_pos else s_pos
    return torch.sigmoid(sp - s_neg)


def gather_clean(p_yes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(B,)`` cleanliness of each sample's own (pseudo-)label: ``p_yes[i, labels[i]]``."""
    return p_yes.gather(1, labels.long().unsqueeze(1)).squeeze(1)


def complementary_labels(labels: torch.Tensor, num_classes: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(B,)`` uniformly random labels different from ``labels`` (DeFT's ``ybar``)."""
    if num_classes < 2:
        raise ValueError("complementary labels need at least 2 classes")
    off = torch.randint(1, num_classes, labels.shape, generator=generator, device="cpu").to(labels.device)
    return (labels + off) % num_classes


def deft_losses(
    s_pos: torch.Tensor,
    s_neg: torch.Tensor,
    labels: torch.Tensor,
    comp: torch.Tensor,
    warmup: bool,
    detach_pos: bool = True,
    clean_denominator: Callable[[torch.Tensor], torch.Tensor] | None = None,
    neg_log: str = "eps",
) -> dict[str, torch.Tensor]:
    """DeFT's phase-1 losses for one batch.

    s_pos, s_neg: ``(B, C)`` logits of the positive / negative prompts.
    labels: ``(B,)`` (pseudo-)labels; comp: ``(B,)`` complementary labels (!= labels).
    warmup: during warm-up every sample counts as clean.
    clean_denominator: maps this batch's clean count (a 0-d tensor) to the denominator of the
        clean-sample mean (None: ``max(count, 1)``). Under torchrun the caller passes
        ``max(global count, 1) / number of ranks``, so that the ranks' averaged gradients equal
        the single-process gradient of the whole batch.
    neg_log: the logarithms of ``L_neg``: ``eps`` (ours) ``log(p + 1e-8)``, never saturating;
        ``clamp`` (DeFT) ``log(max(p, 1e-5))``, constant with zero gradient below 1e-5.

    Returns ``cls`` (CE of ``s+`` over the clean samples, 0 when none), ``neg`` (mean over the
    batch of ``-log p_no[comp] - log p_yes[y']``), ``clean`` ``(B,)`` bool mask (``p_yes[y] >
    0.5`` after warm-up), ``p_clean`` ``(B,)`` and ``n_clean``, the denominator used (for other
    clean-sample means of the same batch).
    """
    p_yes = clean_probability(s_pos, s_neg, detach_pos)  # (B, C)
    p_clean = gather_clean(p_yes, labels)  # (B,)
    if warmup:
        clean = torch.ones_like(labels, dtype=torch.bool)
    else:
        clean = p_clean.detach() > 0.5
    ce = F.cross_entropy(s_pos, labels, reduction="none")  # (B,)
    count = clean.sum()
    denom = count.clamp_min(1) if clean_denominator is None else clean_denominator(count)
    cls = (ce * clean).sum() / denom
    y_prime = torch.where(clean, labels, s_pos.detach().argmax(dim=1))
    if neg_log == "eps":
        def log(p):
            return torch.log(p + 1e-8)
    elif neg_log == "clamp":
        def log(p):
            return torch.log(p.clamp_min(1e-5))
    else:
        raise ValueError(f"neg_log must be eps or clamp, got {neg_log!r}")
    log_yes = log(gather_clean(p_yes, y_prime))
    log_no = log(1 - gather_clean(p_yes, comp))
    neg = -(log_no + log_yes).mean()
    return {"cls": cls, "neg": neg, "clean": clean, "p_clean": p_clean.detach(), "n_clean": denom}


def per_class_top(
    conf: torch.Tensor, pseudo: torch.Tensor, num_classes: int, frac: float | None = None,
    min_per_class: int = 1, k: int | None = None,
) -> torch.Tensor:
    """``(N,)`` bool: the most confident samples of each pseudo-class c.

    The UPL/CPL-style "high-confidence samples" of CoFT's phase 1 (our reading of the abstract):
    a per-class rank, not a probability threshold, so it adapts to each class's calibration.
    Either ``frac`` (keep ``ceil(frac * n_c)``, at least ``min_per_class``: proportional to the
    pseudo-class sizes) or ``k`` (keep ``min(k, n_c)``: UPL's fixed top-K, class-balanced).
    """
    if (frac is None) == (k is None):
        raise ValueError("per_class_top needs exactly one of frac and k")
    keep = torch.zeros_like(pseudo, dtype=torch.bool)
    for c in range(num_classes):
        idx = (pseudo == c).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        if k is not None:
            n = k
        else:
            n = max(min_per_class, int(torch.ceil(torch.tensor(frac * idx.numel())).item()))
        n = min(n, idx.numel())
        top = conf[idx].topk(n).indices
        keep[idx[top]] = True
    return keep


def class_balance_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(C,)`` CE class weights ``n / (C_present * n_c)`` for ``labels (n,)``: each present class
    weighs the same in total; absent classes get 0. Mean weight per sample is 1."""
    counts = torch.bincount(labels.long(), minlength=num_classes).float()
    present = (counts > 0).sum().clamp_min(1)
    return torch.where(counts > 0, labels.numel() / (present * counts.clamp_min(1)), torch.zeros_like(counts))


@dataclass
class Collaboration:
    """What :func:`collaborate` returns.

    labels: ``(N,)`` the label each kept sample trains with (-1 where dropped).
    keep: ``(N,)`` bool.
    code: ``(N,)`` int: DROPPED 0, CONFIRMED 1 (pseudo-label kept), RELABELLED 2 (both models
        agree on another class).
    """

    labels: torch.Tensor
    keep: torch.Tensor
    code: torch.Tensor


def collaborate(
    pseudo: torch.Tensor,
    text_logits: torch.Tensor,
    p_yes: torch.Tensor,
    vision_logits: torch.Tensor,
    require: str = "both",
    relabel: bool = True,
    relabel_gate: bool = True,
) -> Collaboration:
    """Cross-modal filtering and relabelling of pseudo-labels (OUR reconstruction of CoFT's rule).

    pseudo: ``(N,)`` current pseudo-labels.
    text_logits: ``(N, C)`` positive-prompt logits of the text-side model; p_yes: ``(N, C)`` its
        per-class cleanliness (:func:`clean_probability`).
    vision_logits: ``(N, C)`` logits of the vision-side model (adapted encoder + head).
    require: how the pseudo-label is CONFIRMED. ``both``: the text side's cleanliness gate
        (``p_yes[y] > 0.5``) AND the vision side's prediction (``argmax == y``) vouch for it;
        ``either``: one of them suffices (higher recall, lower precision).
    relabel: recover an unconfirmed sample when the two models agree on a class ``a != y``.
    relabel_gate: also require the text side's cleanliness of the new class, ``p_yes[a] > 0.5``.
    """
    if require not in ("both", "either"):
        raise ValueError(f"require must be 'both' or 'either', got {require!r}")
    pseudo = pseudo.long()
    y_t = text_logits.argmax(dim=1)
    y_v = vision_logits.argmax(dim=1)
    text_ok = gather_clean(p_yes, pseudo) > 0.5
    vision_ok = y_v == pseudo
    confirmed = (text_ok & vision_ok) if require == "both" else (text_ok | vision_ok)
    code = torch.where(confirmed, CONFIRMED, DROPPED)
    labels = torch.where(confirmed, pseudo, torch.full_like(pseudo, -1))
    if relabel:
        agree = (y_t == y_v) & (y_t != pseudo) & ~confirmed
        if relabel_gate:
            agree &= gather_clean(p_yes, y_t) > 0.5
        labels = torch.where(agree, y_t, labels)
        code = torch.where(agree, RELABELLED, code)
    return Collaboration(labels=labels, keep=code != DROPPED, code=code)


def selection_stats(selected: torch.Tensor, pseudo: torch.Tensor, truth: torch.Tensor | None) -> dict[str, float]:
    """Monitoring only: fraction selected and, with true labels, precision/recall of the selection.

    selected: ``(N,)`` bool; pseudo: ``(N,)`` the label each selected sample would train with;
    truth: ``(N,)`` true labels (-1 unknown) or None. precision = P(pseudo correct | selected),
    recall = P(selected | pseudo correct), both over samples with a known label.
    """
    out = {"frac": float(selected.float().mean()) if selected.numel() else 0.0}
    if truth is None:
        return out
    known = truth >= 0
    if not bool(known.any()):
        return out
    correct = (pseudo == truth) & known
    sel = selected & known
    out["precision"] = float(correct[sel].float().mean()) if bool(sel.any()) else float("nan")
    out["recall"] = float(sel[correct].float().mean()) if bool(correct.any()) else float("nan")
    out["label_acc"] = float(correct[known].float().mean())
    return out


def moco_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    queue: torch.Tensor,
    temperature: float = 0.07,
    labels: torch.Tensor | None = None,
    queue_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """MoCo InfoNCE with an optional pseudo-label-supervised positive set (CoFT+, OUR form).

    q: ``(B, d)`` L2-normalised queries (online encoder); k: ``(B, d)`` keys of the other view
    (momentum encoder, no grad); queue: ``(K, d)`` past keys. Unsupervised (``labels`` None):
    ``-log exp(q.k/t) / (exp(q.k/t) + sum_j exp(q.queue_j/t))``. Supervised: every queue entry
    with the same label (``queue_labels``, -1 = none) is a positive too; the loss averages
    ``-log p`` over the positives of each query (SupCon/PiCO style).
    """
    k = k.detach()
    queue = queue.detach()
    pos = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
    neg = q @ queue.T  # (B, K)
    logits = torch.cat([pos, neg], dim=1) / temperature  # (B, 1+K)
    logp = F.log_softmax(logits, dim=1)
    if labels is None or queue_labels is None:
        return -logp[:, 0].mean()
    same = (labels.unsqueeze(1) == queue_labels.unsqueeze(0)) & (queue_labels.unsqueeze(0) >= 0)  # (B, K)
    mask = torch.cat([torch.ones_like(pos, dtype=torch.bool), same], dim=1).float()
    return -((logp * mask).sum(dim=1) / mask.sum(dim=1)).mean()


__all__ = [
    "CONFIRMED",
    "DROPPED",
    "RELABELLED",
    "Collaboration",
    "class_balance_weights",
    "clean_probability",
    "collaborate",
    "complementary_labels",
    "deft_losses",
    "gather_clean",
    "moco_loss",
    "per_class_top",
    "selection_stats",
]
