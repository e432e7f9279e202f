"""The training-free family: zero-shot CLIP, CuPL and WCA, as one method with a scorer switch.

The classifier keeps the encoded class texts, so ``labelless predict`` needs neither the text
files nor the text encoder afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from labelless.data.features import extract_features
from labelless.errors import ConfigError
from labelless.methods.base import Classifier, FitContext, FitResult, Method, Runtime
from labelless.registry import CLASSIFIERS, METHODS, SCORERS
from labelless.scoring import ClassTextFeat, ImageFeat
from labelless.text.encode import encode_texts  # noqa: F401 - also re-exported from here
from labelless.views import build_view

if TYPE_CHECKING:
    from labelless.backbones.base import Backbone


@dataclass
class ZeroShotConfig:
    """Training-free scoring.

    scorer: ``clip`` (label prompts), ``cupl`` (mean of the class texts) or ``wca`` (weighted
        crops x weighted descriptions).
    logit_scale: CLIP's 100.
    crops: number of random crops for WCA (WCA's paper draws 60 of 100; 32 is our default for
        CPU budgets, set it as you like).
    crop_scale: crop side fraction range (a, b) of min(H, W).
    image_scale, text_scale: WCA's log inverse temperatures (e^4, e^2).
    """

    scorer: Literal["clip", "cupl", "wca"] = "clip"
    logit_scale: float = 100.0
    crops: int = 32
    crop_scale: tuple[float, float] = (0.5, 0.9)
    image_scale: float = 4.0
    text_scale: float = 2.0

    def __post_init__(self):
        if self.scorer not in SCORERS:
            raise ConfigError(f"unknown scorer '{self.scorer}'. Available: {', '.join(SCORERS.names())}")
        if self.crops < 1:
            raise ConfigError(f"crops must be >= 1, got {self.crops}")


@CLASSIFIERS.register("zeroshot")
class ZeroShotClassifier(Classifier):
    """Scores images against fixed class-text embeddings with a registered scorer."""

    kind = "zeroshot"

    def __init__(self, classnames, backbone_spec, config, text: ClassTextFeat | None = None):
        super().__init__(classnames, backbone_spec, config)
        self.text = text

    @property
    def cfg(self) -> ZeroShotConfig:
        return ZeroShotConfig(**{**self.config, "crop_scale": tuple(self.config["crop_scale"])})

    def image_features(self, backbone: Backbone, dataset, rt: Runtime) -> ImageFeat:
        cfg = self.cfg
        common = dict(seed=rt.seed, batch_size=rt.batch_size, num_workers=rt.num_workers,
                      cache_dir=rt.cache_dir, progress=rt.progress, views_on=rt.views_on)
        g = extract_features(backbone, dataset, build_view("global", backbone), **common)
        crops = None
        if cfg.scorer == "wca":
            view = build_view("crops", backbone, n=cfg.crops, scale=cfg.crop_scale)
            crops = extract_features(backbone, dataset, view, **common).embeds
        return ImageFeat(global_embed=g.embeds[:, 0], crop_embeds=crops)

    def logits_from(self, image: ImageFeat) -> torch.Tensor:
        cfg = self.cfg
        kwargs = {"scale": cfg.logit_scale}
        if cfg.scorer == "wca":
            kwargs.update(image_scale=cfg.image_scale, text_scale=cfg.text_scale)
        text = ClassTextFeat(
            self.text.embeds.to(image.global_embed.device),
            self.text.mask.to(image.global_embed.device),
            None if self.text.label_embeds is None else self.text.label_embeds.to(image.global_embed.device),
        )
        return SCORERS.get(cfg.scorer)(image, text, **kwargs)

    def predict(self, backbone: Backbone, dataset, rt: Runtime) -> torch.Tensor:
        return self.logits_from(self.image_features(backbone, dataset, rt))

    def tensors(self):
        t = {"text_embeds": self.text.embeds, "text_mask": self.text.mask}
        if self.text.label_embeds is not None:
            t["label_embeds"] = self.text.label_embeds
        return t

    def load_tensors(self, tensors):
        self.text = ClassTextFeat(tensors["text_embeds"], tensors["text_mask"].bool(), tensors.get("label_embeds"))

    @classmethod
    def from_meta(cls, meta: dict) -> ZeroShotClassifier:
        return cls(meta["classnames"], meta["backbone"]["spec"], meta["config"])


def build_zeroshot(ctx: FitContext, cfg: ZeroShotConfig) -> ZeroShotClassifier:
    """Encode the texts and assemble the zero-shot classifier (no training)."""
    from labelless.config import to_dict

    texts = encode_texts(ctx.backbone, ctx.texts)
    labels = encode_texts(ctx.backbone, ctx.label_texts).mean_embeddings()
    feat = ClassTextFeat(texts.embeds, texts.mask, labels)
    return ZeroShotClassifier(ctx.classnames, ctx.backbone.spec, to_dict(cfg), feat)


@METHODS.register("zeroshot")
class ZeroShot(Method):
    """Training-free CLIP / CuPL / WCA scoring of the class texts (scorer=clip|cupl|wca)."""

    Config = ZeroShotConfig
    name = "zeroshot"

    def fit(self, ctx: FitContext) -> FitResult:
        return FitResult(build_zeroshot(ctx, self.cfg))
