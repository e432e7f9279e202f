"""The two inputs every registered scorer takes: image features and class text features."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageFeat:
    """Image-side features of a batch.

    ``global_embed (B, d)``: embedding of the whole (global) view;
    ``crop_embeds (B, N, d)`` or None: embeddings of N crops of each image (WCA / FAIR).
    """

    global_embed: torch.Tensor  # (B, d)
    crop_embeds: torch.Tensor | None = None  # (B, N, d)


@dataclass
class ClassTextFeat:
    """Text-side features of the C classes.

    ``embeds (C, M, d)``: sentence embeddings, zero-padded to M per class; ``mask (C, M)`` bool,
    True for real sentences; ``label_embeds (C, d)`` or None: one embedding per class of a plain
    label prompt (``"a photo of a {c}."``) or a learned anchor.
    """

    embeds: torch.Tensor  # (C, M, d)
    mask: torch.Tensor  # (C, M) bool
    label_embeds: torch.Tensor | None = None  # (C, d)
