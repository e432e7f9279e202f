"""Scores as pure tensor functions, and the registered scorers built on them.

Every entry of :data:`labelless.registry.SCORERS` is called as
``scorer(image: ImageFeat, text: ClassTextFeat, **cfg) -> (B, C) logits`` on CLIP's logit scale
(``scale * similarity``, ``scale=100`` by default), so methods can swap scorers by name.
"""

from __future__ import annotations

import torch

from labelless.errors import ConfigError
from labelless.registry import SCORERS
from labelless.scoring.clip import class_prototypes, clip_logits
from labelless.scoring.cupl import cupl_logits
from labelless.scoring.types import ClassTextFeat, ImageFeat
from labelless.scoring.wca import crop_weights, text_weights, wca_scores

__all__ = [
    "ClassTextFeat",
    "ImageFeat",
    "class_prototypes",
    "clip_logits",
    "crop_weights",
    "cupl_logits",
    "score_clip",
    "score_cupl",
    "score_wca",
    "text_weights",
    "wca_scores",
]


@SCORERS.register("clip")
def score_clip(image: ImageFeat, text: ClassTextFeat, scale: float = 100.0) -> torch.Tensor:
    """CLIP zero-shot: global image vs the label embedding (or, without one, the text mean).

    -> ``(B, C)`` logits.
    """
    classes = text.label_embeds
    if classes is None:
        classes = class_prototypes(text.embeds, text.mask)  # (C, d)
    return clip_logits(image.global_embed, classes, scale)  # (B, C)


@SCORERS.register("cupl")
def score_cupl(image: ImageFeat, text: ClassTextFeat, scale: float = 100.0) -> torch.Tensor:
    """CuPL: global image vs the normalised mean of each class's descriptions. -> ``(B, C)``."""
    return cupl_logits(image.global_embed, text.embeds, text.mask, scale)  # (B, C)


@SCORERS.register("wca")
def score_wca(
    image: ImageFeat,
    text: ClassTextFeat,
    scale: float = 100.0,
    image_scale: float = 4.0,
    text_scale: float = 2.0,
    normalize: bool = True,
) -> torch.Tensor:
    """WCA: weighted crops vs weighted descriptions (needs crops and label embeddings).

    -> ``(B, C)`` logits, ``scale * wca_scores(...)``.
    """
    if image.crop_embeds is None:
        raise ConfigError(
            "the 'wca' scorer needs crop embeddings (ImageFeat.crop_embeds, (B, N, d)); "
            "extract features with a crops view"
        )
    if text.label_embeds is None:
        raise ConfigError(
            "the 'wca' scorer needs label embeddings (ClassTextFeat.label_embeds, (C, d)) "
            "to weight the descriptions, e.g. from templates:name=clip"
        )
    s = wca_scores(
        image.global_embed,
        image.crop_embeds,
        text.embeds,
        text.mask,
        text.label_embeds,
        image_scale=image_scale,
        text_scale=text_scale,
        normalize=normalize,
    )  # (B, C)
    return scale * s
