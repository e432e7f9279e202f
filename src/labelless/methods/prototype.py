"""The ``prototype`` classifier: the global image embedding against learned class vectors.

Shared by methods whose final classifier is a set of class vectors in the joint embedding space:
FAIR's Class Description Anchors (one per class) and LaTTe-CLIP's prototype bank. Logits are
``logit_scale * cos(f(x), P_c)``; with several prototypes per class (``(C, K, d)``) the class
score is their ``max`` or ``mean`` cosine.

The feature cache is keyed by the backbone's *base* weights, so a classifier whose method changed
backbone parameters (``backbone_tuned`` in its config) never reads or writes the cache: a stale
feature of the un-adapted model would otherwise be returned silently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F

from labelless.data.features import extract_features
from labelless.errors import ConfigError
from labelless.methods.base import Classifier, Runtime
from labelless.registry import CLASSIFIERS
from labelless.views import build_view

if TYPE_CHECKING:
    from labelless.backbones.base import Backbone


def prototype_logits(
    image_embeds: torch.Tensor,
    prototypes: torch.Tensor,
    scale: float = 100.0,
    aggregate: Literal["max", "mean"] = "max",
) -> torch.Tensor:
    """``scale * cos(image, prototype)``.

    image_embeds ``(B, d)``, prototypes ``(C, d)`` or ``(C, K, d)`` -> ``(B, C)``; with K
    prototypes per class the K cosines are reduced by ``aggregate``.
    """
    img = F.normalize(image_embeds, dim=-1)  # (B, d)
    p = F.normalize(prototypes.to(img), dim=-1)
    if p.ndim == 2:
        return scale * img @ p.t()  # (B, C)
    cos = torch.einsum("bd,ckd->bck", img, p)  # (B, C, K)
    red = cos.amax(dim=-1) if aggregate == "max" else cos.mean(dim=-1)
    return scale * red  # (B, C)


@CLASSIFIERS.register("prototype")
class PrototypeClassifier(Classifier):
    """Global view vs learned, normalised class prototypes (FAIR's anchors, LaTTe-CLIP's bank).

    config keys: ``logit_scale`` (default 100), ``aggregate`` (``max``/``mean`` over prototypes
    of a class), ``backbone_tuned`` (bool: disables the feature cache, see the module docstring).
    """

    kind = "prototype"

    def __init__(self, classnames, backbone_spec, config=None, prototypes: torch.Tensor | None = None):
        config = {"logit_scale": 100.0, "aggregate": "max", "backbone_tuned": False, **(config or {})}
        super().__init__(classnames, backbone_spec, config)
        if config["aggregate"] not in ("max", "mean"):
            raise ConfigError(f"prototype classifier: aggregate must be max or mean, got {config['aggregate']!r}")
        self.prototypes = None
        if prototypes is not None:
            self._set(prototypes)

    def _set(self, prototypes: torch.Tensor) -> None:
        if prototypes.ndim not in (2, 3) or prototypes.shape[0] != len(self.classnames):
            raise ConfigError(
                f"prototypes must be (C, d) or (C, K, d) with C={len(self.classnames)}, got {tuple(prototypes.shape)}"
            )
        self.prototypes = F.normalize(prototypes.detach().float(), dim=-1)

    def logits_from(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """``(B, d)`` global embeddings -> ``(B, C)`` logits."""
        return prototype_logits(
            image_embeds, self.prototypes.to(image_embeds.device),
            float(self.config["logit_scale"]), self.config["aggregate"],
        )

    def predict(self, backbone: Backbone, dataset, rt: Runtime) -> torch.Tensor:
        cache = None if self.config.get("backbone_tuned") else rt.cache_dir
        feats = extract_features(
            backbone, dataset, build_view("global", backbone), seed=rt.seed,
            batch_size=rt.batch_size, num_workers=rt.num_workers, cache_dir=cache, progress=rt.progress,
            views_on=rt.views_on,
        )
        return self.logits_from(feats.embeds[:, 0].float())

    def tensors(self):
        return {"prototypes": self.prototypes}

    def load_tensors(self, tensors):
        self._set(tensors["prototypes"])

    @classmethod
    def from_meta(cls, meta: dict) -> PrototypeClassifier:
        return cls(meta["classnames"], meta["backbone"]["spec"], meta["config"])


__all__ = ["PrototypeClassifier", "prototype_logits"]
