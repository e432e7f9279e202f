"""CuPL: CLIP scoring against the mean of many LLM descriptions per class (Pratt et al. 2023)."""

from __future__ import annotations

import torch

from labelless.scoring.clip import class_prototypes, clip_logits


def cupl_logits(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    mask: torch.Tensor | None = None,
    scale: float = 100.0,
) -> torch.Tensor:
    """CLIP logits with each class represented by the normalised mean of its descriptions.

    image_embeds ``(B, d)``, text_embeds ``(C, M, d)``, mask ``(C, M)`` bool -> ``(B, C)``.
    """
    protos = class_prototypes(text_embeds, mask)  # (C, d)
    return clip_logits(image_embeds, protos, scale)  # (B, C)
