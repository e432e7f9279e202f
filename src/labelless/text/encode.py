"""Encode ``{class: [sentences]}`` into padded per-class text embeddings: with any text encoder
(:func:`encode_class_texts`) or with a backbone's text tower (:func:`encode_texts`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from labelless.errors import TextSourceError

if TYPE_CHECKING:
    from labelless.backbones.base import Backbone


@dataclass
class ClassTexts:
    """Per-class sentence embeddings, padded to the largest class.

    ``embeds (C, M, d)``: L2-normalised embedding of sentence m of class c, zeros where padded;
    ``mask (C, M)`` bool: True for real sentences; ``classnames``: the C class names in order;
    ``texts``: the sentences themselves (same order as ``embeds``), kept for provenance.
    """

    embeds: torch.Tensor  # (C, M, d)
    mask: torch.Tensor  # (C, M) bool
    classnames: list[str]
    texts: dict[str, list[str]] = field(default_factory=dict)

    @property
    def counts(self) -> torch.Tensor:
        """Number of sentences per class ``(C,)``."""
        return self.mask.sum(dim=1)

    def mean_embeddings(self) -> torch.Tensor:
        """``(C, d)`` L2-normalised mean of each class's normalised sentence embeddings (the
        CLIP prompt-ensemble / CuPL class prototype)."""
        m = self.mask.to(self.embeds.dtype).unsqueeze(-1)  # (C, M, 1)
        mean = (self.embeds * m).sum(dim=1) / m.sum(dim=1).clamp_min(1)  # (C, d)
        return F.normalize(mean, dim=-1)

    def to(self, device=None, dtype=None) -> ClassTexts:
        """A copy with ``embeds`` (and ``mask``'s device) moved."""
        return ClassTexts(
            self.embeds.to(device=device, dtype=dtype),
            self.mask.to(device=device),
            list(self.classnames),
            self.texts,
        )


def encode_class_texts(
    encode_fn: Callable[[list[str]], torch.Tensor],
    texts: dict[str, list[str]],
    batch_size: int = 256,
) -> ClassTexts:
    """Embed every sentence of every class with ``encode_fn`` and pad per class.

    ``encode_fn(list[str]) -> (T, d)`` is typically ``backbone.encode_text``. All sentences of all
    classes go through it in one pass of ``batch_size`` chunks; identical sentences are encoded
    once. Outputs are L2-normalised again here (a no-op for a normalised encoder) so that
    prototypes and scores never depend on the encoder's convention. Gradients are not disabled:
    wrap the call in ``torch.no_grad()`` unless the text encoder is being trained.
    """
    if not texts:
        raise TextSourceError("no classes to encode (the text dict is empty)")
    for c, ss in texts.items():
        if not ss:
            raise TextSourceError(f"class '{c}' has no sentences to encode")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")

    unique = list(dict.fromkeys(s for ss in texts.values() for s in ss))
    index = {s: i for i, s in enumerate(unique)}
    chunks = []
    for start in range(0, len(unique), batch_size):
        batch = unique[start : start + batch_size]
        out = encode_fn(batch)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != len(batch):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"encode_fn returned {got} for {len(batch)} texts; expected (T, d)")
        chunks.append(out)
    flat = F.normalize(torch.cat(chunks), dim=-1)  # (U, d) unique sentences

    classnames = list(texts)
    C, M = len(classnames), max(len(ss) for ss in texts.values())
    idx = torch.zeros(C, M, dtype=torch.long, device=flat.device)
    mask = torch.zeros(C, M, dtype=torch.bool, device=flat.device)
    for c, name in enumerate(classnames):
        ss = texts[name]
        idx[c, : len(ss)] = torch.tensor([index[s] for s in ss], device=flat.device)
        mask[c, : len(ss)] = True
    embeds = flat[idx] * mask.unsqueeze(-1).to(flat.dtype)  # (C, M, d), zeros where padded
    return ClassTexts(embeds, mask, classnames, {k: list(v) for k, v in texts.items()})


def encode_texts(backbone: Backbone, texts: dict[str, list[str]], batch_size: int = 256) -> ClassTexts:
    """Encode a ``{class: [sentences]}`` dict with the backbone's text tower, without grad."""
    with torch.no_grad():
        return encode_class_texts(backbone.encode_text, texts, batch_size=batch_size)
