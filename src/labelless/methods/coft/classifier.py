"""The CoFT classifier artifact: the fine-tuned image tower + a linear head."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from labelless.methods.base import Classifier, Runtime
from labelless.methods.coft.common import _features
from labelless.registry import CLASSIFIERS

if TYPE_CHECKING:
    from labelless.backbones.base import Backbone


@CLASSIFIERS.register("coft")
class CoFTClassifier(Classifier):
    """The phase-2 model: the fine-tuned image tower (artifact ``tuned``) + a linear head."""

    kind = "coft"

    def __init__(self, classnames, backbone_spec, config, weight=None, bias=None):
        super().__init__(classnames, backbone_spec, config)
        self.weight = weight
        self.bias = bias

    def predict(self, backbone: Backbone, dataset, rt: Runtime) -> torch.Tensor:
        cls = self.config.get("head_feature", "cls") == "cls"
        feats = _features(backbone, dataset, rt, tokens=cls, cache=False)
        x = (feats.cls if cls else feats.embeds)[:, 0]
        return x @ self.weight.to(x).T + self.bias.to(x)

    def tensors(self):
        return {"head.weight": self.weight, "head.bias": self.bias}

    def load_tensors(self, tensors):
        self.weight, self.bias = tensors["head.weight"].float(), tensors["head.bias"].float()

    @classmethod
    def from_meta(cls, meta):
        return cls(meta["classnames"], meta["backbone"]["spec"], meta["config"])
