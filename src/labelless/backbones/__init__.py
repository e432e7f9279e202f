"""Backbones: one interface over open_clip and Hugging Face CLIP models.

``load_backbone("openclip:ViT-B-32:laion2b_s34b_b79k")``, ``load_backbone("hf:/path/to/dir")``.
The part before the first ``:`` names the source (a :data:`labelless.registry.BACKBONES`
entry); the rest is that source's own spec.
"""

from __future__ import annotations

import torch

from labelless.backbones import hf as _hf  # noqa: F401  (registers "hf")
from labelless.backbones import openclip as _openclip  # noqa: F401  (registers "openclip")
from labelless.backbones.base import (
    PARAM_GROUPS,
    Backbone,
    ImageOutput,
    select_trainable,
    trainable_report,
)
from labelless.backbones.openclip import list_openclip
from labelless.errors import BackboneError, did_you_mean
from labelless.registry import BACKBONES

__all__ = [
    "PARAM_GROUPS",
    "Backbone",
    "ImageOutput",
    "load_backbone",
    "list_backbones",
    "select_trainable",
    "trainable_report",
]


def load_backbone(spec: str, device: str | torch.device = "cpu") -> Backbone:
    """Build the backbone named by ``spec`` (``SOURCE:REST``), in eval mode on ``device``."""
    source, sep, rest = (spec or "").partition(":")
    if source == "testbed" and not rest:  # the in-project testbed needs no further spec
        return BACKBONES.get(source)("", device=device)
    if not sep or not rest:
        raise BackboneError(
            f"bad backbone spec '{spec}': expected SOURCE:MODEL, e.g. "
            "openclip:ViT-B-32:laion2b_s34b_b79k, openclip:ViT-B-32:/path/ckpt.pt, "
            f"hf:openai/clip-vit-base-patch32. Sources: {', '.join(BACKBONES.names())}"
        )
    if source not in BACKBONES:
        raise BackboneError(
            f"unknown backbone source '{source}' in spec '{spec}'.{did_you_mean(source, BACKBONES.names())} "
            f"Sources: {', '.join(BACKBONES.names())} (e.g. openclip:ViT-B-32:laion2b_s34b_b79k)"
        )
    return BACKBONES.get(source)(rest, device=device)


def list_backbones() -> list[str]:
    """Spec strings for every known open_clip weight (plus the hf: form)."""
    return list_openclip() + ["hf:<hub id or save_pretrained directory>"]
