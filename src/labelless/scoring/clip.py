"""CLIP zero-shot logits and class prototypes."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def clip_logits(
    image_embeds: torch.Tensor, class_embeds: torch.Tensor, scale: float = 100.0
) -> torch.Tensor:
    """``scale * cos(image, class)``.

    image_embeds ``(B, d)``, class_embeds ``(C, d)`` -> logits ``(B, C)``. Both sides are
    L2-normalised here even if the caller already did: it is idempotent, cheap next to the
    encoders, and makes learned class vectors (e.g. FAIR's anchors) safe to pass raw.
    ``scale=100`` is CLIP's learned logit scale (``exp(4.6052)``).
    """
    img = F.normalize(image_embeds, dim=-1)  # (B, d)
    cls = F.normalize(class_embeds, dim=-1)  # (C, d)
    return scale * img @ cls.t()  # (B, C)


def class_prototypes(embeds: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """L2-normalised mean of each class's normalised sentence embeddings.

    embeds ``(C, M, d)``, mask ``(C, M)`` bool (None: all valid) -> ``(C, d)``. Padded entries
    are ignored. This is the CLIP prompt-ensemble / CuPL class vector.
    """
    e = F.normalize(embeds, dim=-1)  # (C, M, d); zero padding stays zero
    if mask is None:
        mask = torch.ones(e.shape[:2], dtype=torch.bool, device=e.device)
    if not bool(mask.any(dim=1).all()):
        empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
        raise ValueError(f"classes {empty} have no valid text embedding in the mask")
    m = mask.to(e.dtype).unsqueeze(-1)  # (C, M, 1)
    mean = (e * m).sum(dim=1) / m.sum(dim=1)  # (C, d)
    return F.normalize(mean, dim=-1)
