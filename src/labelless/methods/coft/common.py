"""Helpers shared by CoFT's phases and classifier: feature extraction, linear heads, monitoring."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from labelless.data.features import extract_features
from labelless.methods.base import Runtime
from labelless.scoring.coft import selection_stats
from labelless.views import build_view

if TYPE_CHECKING:
    from labelless.backbones.base import Backbone


def _features(backbone: Backbone, dataset, rt: Runtime, tokens: bool, cache: bool):
    """Global-view features of ``dataset``; never cached when the backbone is adapted or tuned
    (the cache key is the base model's fingerprint)."""
    return extract_features(
        backbone, dataset, build_view("global", backbone), seed=rt.seed, tokens=tokens,
        batch_size=rt.batch_size, num_workers=rt.num_workers,
        cache_dir=rt.cache_dir if cache else None, progress=rt.progress, views_on=rt.views_on,
    )


def _head_input(out, head_feature: str) -> torch.Tensor:
    return out.cls if head_feature == "cls" else out.embeds


def _visual_projection(backbone: Backbone) -> torch.Tensor:
    """``(w, d)`` matrix mapping the [CLS] token to the (unnormalised) image embedding."""
    if backbone.backend == "openclip":
        return backbone.model.visual.proj
    return backbone.model.visual_projection.weight.T


def make_head(backbone: Backbone, text_embeds: torch.Tensor, head_feature: str, init: str, scale: float,
              generator: torch.Generator, cls_norm: float = 1.0) -> nn.Linear:
    """The linear vision head ``(C, w or d)``: random (DeFT) or zero-shot initialised (ours)."""
    c, d = text_embeds.shape
    in_dim = d if head_feature == "embed" else int(_visual_projection(backbone).shape[0])
    head = nn.Linear(in_dim, c)
    if init == "random":
        bound = 1.0 / math.sqrt(in_dim)  # nn.Linear's default range, drawn from our generator
        with torch.no_grad():
            head.weight.uniform_(-bound, bound, generator=generator)
            head.bias.uniform_(-bound, bound, generator=generator)
    else:
        with torch.no_grad():
            w = scale * text_embeds.float()  # (C, d)
            if head_feature == "cls":
                w = w @ _visual_projection(backbone).detach().float().T / cls_norm  # (C, w)
            head.weight.copy_(w)
            head.bias.zero_()
    return head.to(backbone.device)


class _MonitorMixin:
    """Per-epoch selected-clean fraction and its precision/recall against monitoring labels."""

    def _reset_monitor(self, n: int):
        self._seen = torch.zeros(n, dtype=torch.bool)
        self._selected = torch.zeros(n, dtype=torch.bool)

    def _record(self, idx: torch.Tensor, selected: torch.Tensor):
        self._seen[idx] = True
        self._selected[idx] = selected.detach().cpu()

    def _monitor_row(self, labels: torch.Tensor, truth: torch.Tensor | None, prefix: str) -> dict:
        seen = self._seen
        stats = selection_stats(self._selected[seen], labels[seen], None if truth is None else truth[seen])
        return {f"{prefix}_{k}": v for k, v in stats.items()}

