"""Label-free discriminative region scoring (Zhu 2026; docs/methods/region-probe.md), as pure functions.

An image has a global embedding ``g`` and ``L`` region embeddings ``f_i`` (random crops or SAM
mask regions); the ``C`` classes have text embeddings ``t_c``. All are L2-normalised, so cosine
similarity is a dot product. Every region gets a score ``s_i`` that says how much
class-discriminative evidence it carries; the top-k regions are averaged with ``softmax(s)``
weights into ``r``, and a linear classifier reads ``[g; r]``.

Scores (paper section 3.4; ``y~`` is a pseudo-label, or the true label for the oracle):

    region-global   s_i = cos(f_i, g)
    region-text     s_i = cos(f_i, t_y~)
    hard margin     s_i = cos(f_i, t_y~) - max_{c != y~} cos(f_i, t_c)
    soft margin     s_i = cos(f_i, t_y~) - sum_{c != y~} alpha_ic cos(f_i, t_c),
                    alpha_ic = softmax_{c != y~}(tau * cos(f_i, t_c))
    entropy         s_i = p_i(y~) - lambda * H(p_i),  p_i = softmax_c(tau * cos(f_i, t_c))

``y~`` is either one per image (global pseudo-label: argmax_c cos(g, t_c)) or one per region
(local pseudo-label: argmax_c cos(f_i, t_c)); the functions below take a ``target`` of shape
``(B,)`` or ``(B, L)`` and broadcast. Regions may be padded (SAM gives a variable number of
masks): ``valid (B, L)`` bool marks real regions; padded ones never enter the top-k.

Shapes: B images, L regions, C classes, d embedding dimension.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Scoring strategies of the paper's Table 1, plus the two baselines that do not score regions.
STRATEGIES: tuple[str, ...] = (
    "global_linear",  # r = g only: no regions (baseline I)
    "average",  # r = mean of all regions (baseline II)
    "region_global",  # eq. 3
    "region_text",  # section 3.4 IV
    "hard_margin",  # V
    "soft_margin",  # VI
    "entropy",  # VII
)
#: Strategies that need a (pseudo- or true) target class.
TARGETED: tuple[str, ...] = ("region_text", "hard_margin", "soft_margin", "entropy")


def region_text_sims(regions: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """``cos(f_i, t_c)``: regions ``(B, L, d)``, texts ``(C, d)`` -> ``(B, L, C)``."""
    f = F.normalize(regions, dim=-1)  # (B, L, d)
    t = F.normalize(texts, dim=-1)  # (C, d)
    return torch.einsum("bld,cd->blc", f, t)  # (B, L, C)


def global_pseudo_labels(global_embed: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """Eq. 4: ``argmax_c cos(g, t_c)``; global_embed ``(B, d)``, texts ``(C, d)`` -> ``(B,)``."""
    g = F.normalize(global_embed, dim=-1)
    return (g @ F.normalize(texts, dim=-1).t()).argmax(dim=-1)  # (B,)


def local_pseudo_labels(sims: torch.Tensor) -> torch.Tensor:
    """Eq. 5: ``argmax_c cos(f_i, t_c)`` per region; sims ``(B, L, C)`` -> ``(B, L)``."""
    return sims.argmax(dim=-1)


def _target_index(sims: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Broadcast a target ``(B,)`` or ``(B, L)`` to ``(B, L, 1)`` int64 for gather."""
    b, n, _ = sims.shape
    if target.dim() == 1:
        target = target[:, None].expand(b, n)
    if target.shape != (b, n):
        raise ValueError(f"target must be (B,) or (B, L) = {(b, n)}, got {tuple(target.shape)}")
    return target.long().unsqueeze(-1)  # (B, L, 1)


def score_region_global(regions: torch.Tensor, global_embed: torch.Tensor) -> torch.Tensor:
    """Eq. 3: ``cos(f_i, g)``; regions ``(B, L, d)``, global_embed ``(B, d)`` -> ``(B, L)``."""
    f = F.normalize(regions, dim=-1)
    g = F.normalize(global_embed, dim=-1)
    return torch.einsum("bld,bd->bl", f, g)


def score_region_text(sims: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``cos(f_i, t_y~)``; sims ``(B, L, C)``, target ``(B,)`` or ``(B, L)`` -> ``(B, L)``."""
    return sims.gather(-1, _target_index(sims, target)).squeeze(-1)


def score_hard_margin(sims: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``cos(f_i, t_y~) - max_{c != y~} cos(f_i, t_c)`` -> ``(B, L)`` (needs C >= 2)."""
    idx = _target_index(sims, target)  # (B, L, 1)
    pos = sims.gather(-1, idx).squeeze(-1)  # (B, L)
    neg = sims.scatter(-1, idx, float("-inf")).amax(dim=-1)  # (B, L)
    return pos - neg


def score_soft_margin(sims: torch.Tensor, target: torch.Tensor, tau: float) -> torch.Tensor:
    """``cos(f_i, t_y~) - sum_{c != y~} alpha_ic cos(f_i, t_c)``, alpha = softmax over negatives.

    sims ``(B, L, C)``, target ``(B,)``/``(B, L)``, tau: inverse temperature of the negative
    weighting (tau -> inf: the hard margin; tau = 0: the mean over negatives) -> ``(B, L)``.
    """
    idx = _target_index(sims, target)
    pos = sims.gather(-1, idx).squeeze(-1)  # (B, L)
    logits = (tau * sims).scatter(-1, idx, float("-inf"))  # the target is not a negative
    alpha = torch.softmax(logits, dim=-1)  # (B, L, C), 0 at y~
    return pos - (alpha * sims).sum(dim=-1)


def region_probs(sims: torch.Tensor, tau: float) -> torch.Tensor:
    """``p_i(c) = softmax_c(tau * cos(f_i, t_c))``: ``(B, L, C)`` -> ``(B, L, C)``."""
    return torch.softmax(tau * sims, dim=-1)


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) over the last axis; ``0 log 0 = 0``. ``(..., C)`` -> ``(...)``."""
    return -(p * torch.log(p.clamp_min(1e-12))).sum(dim=-1)


def score_entropy(sims: torch.Tensor, target: torch.Tensor, tau: float, lam: float) -> torch.Tensor:
    """``p_i(y~) - lambda * H(p_i)`` with ``p_i = softmax(tau * sims)`` -> ``(B, L)``."""
    p = region_probs(sims, tau)  # (B, L, C)
    return p.gather(-1, _target_index(sims, target)).squeeze(-1) - lam * entropy(p)


def region_scores(
    strategy: str,
    regions: torch.Tensor,
    global_embed: torch.Tensor,
    texts: torch.Tensor,
    target: str | torch.Tensor = "global",
    tau: float = 50.0,
    lam: float = 0.1,
) -> torch.Tensor:
    """Score every region with one of :data:`STRATEGIES` (the two baselines give zeros).

    regions ``(B, L, d)``, global_embed ``(B, d)``, texts ``(C, d)``; target: ``"global"``
    (eq. 4), ``"local"`` (eq. 5) or a label tensor ``(B,)`` (true labels: the paper's oracle,
    Table 2) -> scores ``(B, L)``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown region scoring '{strategy}'. Available: {', '.join(STRATEGIES)}")
    b, n, _ = regions.shape
    if strategy in ("global_linear", "average"):
        return regions.new_zeros(b, n)
    if strategy == "region_global":
        return score_region_global(regions, global_embed)
    sims = region_text_sims(regions, texts)  # (B, L, C)
    if isinstance(target, str):
        if target == "global":
            target = global_pseudo_labels(global_embed, texts)  # (B,)
        elif target == "local":
            target = local_pseudo_labels(sims)  # (B, L)
        else:
            raise ValueError(f"target must be 'global', 'local' or a label tensor, got {target!r}")
    if strategy == "region_text":
        return score_region_text(sims, target)
    if strategy == "hard_margin":
        return score_hard_margin(sims, target)
    if strategy == "soft_margin":
        return score_soft_margin(sims, target, tau)
    return score_entropy(sims, target, tau, lam)


def topk_weights(scores: torch.Tensor, k: int | None, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Section 3.5: ``w_i = softmax_{i in S}(s_i)`` over the top-k regions S, zero elsewhere.

    scores ``(B, L)``; k: regions kept (None or 0: all valid regions); valid ``(B, L)`` bool
    (None: all) -> weights ``(B, L)``, each row summing to 1 (a plain softmax, no temperature,
    as in the paper). An image with no valid region gets all-zero weights.
    """
    b, n = scores.shape
    if valid is None:
        valid = torch.ones(b, n, dtype=torch.bool, device=scores.device)
    s = scores.masked_fill(~valid, float("-inf"))
    keep = valid.clone()
    if k and k < n:
        top = s.topk(k, dim=-1).indices  # (B, k)
        sel = torch.zeros_like(valid).scatter(-1, top, True)
        keep = keep & sel
    w = torch.softmax(s.masked_fill(~keep, float("-inf")), dim=-1)  # (B, L)
    return torch.nan_to_num(w, nan=0.0)  # rows without a valid region


def aggregate_regions(regions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``r = sum_i w_i f_i``: regions ``(B, L, d)``, weights ``(B, L)`` -> ``(B, d)``.

    The paper sums the un-normalised ``f_i``; labelless features are already L2-normalised.
    """
    return torch.einsum("bl,bld->bd", weights, regions)


def average_regions(regions: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 2: ``r = mean_i f_i`` over valid regions: ``(B, L, d)`` -> ``(B, d)``."""
    if valid is None:
        return regions.mean(dim=1)
    m = valid.to(regions.dtype)  # (B, L)
    return (regions * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp_min(1.0)


def region_representation(
    strategy: str,
    regions: torch.Tensor,
    global_embed: torch.Tensor,
    texts: torch.Tensor,
    target: str | torch.Tensor = "global",
    k: int | None = 5,
    tau: float = 50.0,
    lam: float = 0.1,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """The classifier input ``[g; r]`` (eq. 6) for one strategy.

    ``global_linear`` -> ``g`` alone ``(B, d)`` (eq. 1: r = g adds nothing a linear layer could
    not do with g); ``average`` -> ``[g; mean_i f_i]``; scored strategies -> ``[g; sum_{top-k}
    w_i f_i]``, all ``(B, 2d)``. An image without a valid region gets ``r = g``.
    """
    g = F.normalize(global_embed, dim=-1)  # (B, d)
    if strategy == "global_linear":
        return g
    if valid is not None:
        empty = ~valid.any(dim=1)  # (B,)
    if strategy == "average":
        r = average_regions(regions, valid)
    else:
        s = region_scores(strategy, regions, global_embed, texts, target, tau, lam)  # (B, L)
        r = aggregate_regions(regions, topk_weights(s, k, valid))  # (B, d)
    if valid is not None:
        r = torch.where(empty[:, None], g, r)
    return torch.cat([g, r], dim=-1)  # (B, 2d)


__all__ = [
    "STRATEGIES", "TARGETED", "aggregate_regions", "average_regions", "entropy",
    "global_pseudo_labels", "local_pseudo_labels", "region_probs", "region_representation",
    "region_scores", "region_text_sims", "score_entropy", "score_hard_margin",
    "score_region_global", "score_region_text", "score_soft_margin", "topk_weights",
]
