"""The backbone interface every method uses, whatever library built the model.

A :class:`Backbone` owns its model, its preprocessing (derived from the loaded weights, never
typed by hand) and its tokenizer. Image features come back L2-normalised; on request also the
[CLS] token after the final LayerNorm and before the projection, and the patch tokens (FAIR's
crop weights and region scoring need them). Parameter groups map each library's names onto one
vocabulary so that "tune the visual LayerNorms" means the same on every backend.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from labelless.errors import BackboneError, ConfigError

#: The parameter-group vocabulary shared by all backends.
PARAM_GROUPS = (
    "visual_ln",
    "text_ln",
    "visual_attn",
    "text_attn",
    "projections",
    "visual",
    "text",
    "all",
)


@dataclass
class ImageOutput:
    """What :meth:`Backbone.encode_image` returns.

    embeds:  (B, d) projected and L2-normalised image embedding.
    cls:     (B, w) [CLS] token after the final LayerNorm, before the projection (or None).
    patches: (B, P, w) patch tokens after the final LayerNorm (or None).
    """

    embeds: torch.Tensor
    cls: torch.Tensor | None = None
    patches: torch.Tensor | None = None


class Backbone(nn.Module):
    """A CLIP-like dual encoder behind one interface.

    Subclasses set ``model`` (the wrapped ``nn.Module``), ``spec``, ``fingerprint``,
    ``embed_dim``, ``image_size``, ``mean``, ``std``, ``interpolation``, ``preprocess`` and
    implement :meth:`_encode_image`, :meth:`tokenize`, :meth:`encode_tokens` and
    :meth:`_group_of`.
    """

    backend: str = ""
    spec: str
    fingerprint: str
    embed_dim: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    preprocess: Callable

    # ---- images -------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor, tokens: bool = False) -> ImageOutput:
        """Encode normalised images ``(B, 3, S, S)``; ``tokens=True`` adds [CLS] and patches."""
        out = self._encode_image(images, tokens)
        out.embeds = F.normalize(out.embeds, dim=-1)
        return out

    def _encode_image(self, images: torch.Tensor, tokens: bool) -> ImageOutput:
        raise NotImplementedError

    @property
    def base_fingerprint(self) -> str:
        """The fingerprint of the weights as loaded, before any adaptation."""
        return self.__dict__.get("_base_fingerprint", self.fingerprint)

    def mark_tuned(self, tuned: dict[str, torch.Tensor]) -> None:
        """Record that ``tuned`` parameters now differ from the loaded weights.

        The fingerprint (and so every feature-cache key) then includes a digest of those
        tensors, so features of the adapted model are never confused with the base model's.
        """
        from labelless.utils.io import stable_hash

        digest = stable_hash(
            {k: hashlib.sha256(v.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
             for k, v in sorted(tuned.items())}
        )
        base = self.base_fingerprint
        self.__dict__["_base_fingerprint"] = base
        self.fingerprint = f"{base}|tuned:{digest}" if tuned else base

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ---- text ---------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Unnormalised text embeddings ``(T, d)`` of tokenised texts."""
        raise NotImplementedError

    def encode_text(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised embeddings ``(T, d)`` of ``texts``, encoded in batches."""
        if isinstance(texts, str):
            raise TypeError("encode_text takes a list of strings, not a single string")
        outs = []
        for i in range(0, len(texts), batch_size):
            tok = self.tokenize(list(texts[i : i + batch_size])).to(self.device)
            outs.append(F.normalize(self.encode_tokens(tok), dim=-1))
        if not outs:
            return torch.zeros(0, self.embed_dim, device=self.device)
        return torch.cat(outs)

    @property
    def logit_scale(self) -> float:
        """The model's learned temperature ``exp(logit_scale)`` (100 for CLIP)."""
        return 100.0

    # ---- parameters ---------------------------------------------------------------------
    def _group_of(self, name: str) -> set[str]:
        """The vocabulary groups a parameter name (relative to ``self.model``) belongs to."""
        raise NotImplementedError

    def param_groups(self) -> dict[str, list[str]]:
        """Group name -> parameter names (relative to ``self.model``), for every group."""
        groups: dict[str, list[str]] = {g: [] for g in PARAM_GROUPS}
        for name, _ in self.model.named_parameters():
            for g in self._group_of(name) | {"all"}:
                groups[g].append(name)
        return groups

    def resolve_params(self, selectors: list[str] | tuple[str, ...]) -> list[str]:
        """Parameter names selected by group names or ``re:<regex>`` selectors."""
        groups = self.param_groups()
        names: list[str] = []
        all_names = [n for n, _ in self.model.named_parameters()]
        for sel in selectors:
            if sel.startswith("re:"):
                pattern = re.compile(sel[3:])
                hits = [n for n in all_names if pattern.search(n)]
                if not hits:
                    raise ConfigError(f"parameter selector '{sel}' matches no parameter of {self.spec}")
            elif sel in groups:
                hits = groups[sel]
            else:
                raise ConfigError(
                    f"unknown parameter group '{sel}'. Use one of {', '.join(PARAM_GROUPS)} "
                    "or 're:<regex>'"
                )
            names.extend(h for h in hits if h not in names)
        return names


def trainable_report(module: nn.Module, title: str = "trainable parameters") -> str:
    """A short report of which parameters require grad (peft's ``print_trainable_parameters``)."""
    total = trainable = 0
    tensors = []
    for name, p in module.named_parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
            tensors.append(name)
    pct = 100.0 * trainable / max(total, 1)
    lines = [f"{title}: {trainable:,} of {total:,} ({pct:.3f}%) in {len(tensors)} tensors"]
    shown = tensors if len(tensors) <= 12 else tensors[:6] + ["..."] + tensors[-5:]
    lines += [f"  {n}" for n in shown]
    return "\n".join(lines)


def select_trainable(backbone: Backbone, selectors: list[str] | tuple[str, ...]) -> list[str]:
    """Freeze everything in ``backbone`` except the selected parameters; return their names."""
    names = set(backbone.resolve_params(selectors))
    if not names and selectors:
        raise BackboneError(f"parameter groups {list(selectors)} select nothing in {backbone.spec}")
    for n, p in backbone.model.named_parameters():
        p.requires_grad_(n in names)
    return sorted(names)
