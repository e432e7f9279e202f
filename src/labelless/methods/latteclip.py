"""LaTTe-CLIP (Cao et al., WACV 2025): unsupervised CLIP fine-tuning with LMM-synthetic texts,
and its baseline FLYP + pseudo-labels (``flyp-pl``).

LaTTe-CLIP, as in the official code (astra-vision/LatteCLIP @ 4b7d879; docs/methods/latteclip.md):

* class prototypes ``P (C, d)``, initialised from the class prompt ``templates[0](c)``;
* dual pseudo-labels: ``y_zs`` from the frozen initial model with the class-text ensemble
  (computed once), ``y_ft = argmax <I, P>`` from the current image features and prototypes;
* per image and pseudo-label, three texts: the label text ``templates[0](y)``, the image's LMM
  description (captions JSON), and a group description (groups JSON: a random group caption of
  the image's zero-shot class);
* dynamic feature mixer: weights ``top1 - top2`` similarity of each text to the prototypes
  (snapshot taken at each epoch start, detached); ``t = (1 - alpha) P_y + alpha * t_bar``;
* loss ``L_ft + L_zs``, both OpenCLIP symmetric contrastive losses with the learnable
  temperature (clamped to 100); both towers trained;
* after each step ``P_c <- normalize(mean of the t_i labelled c)`` (an EMA with mu = 1 - alpha);
* inference ``100 <I, normalize(P)>``.

The texts come from ``labelless describe-images`` (``captions``/``groups`` settings) and the
pure functions live in :mod:`labelless.scoring.latte`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F

from labelless.backbones import select_trainable
from labelless.data.features import ViewDataset, extract_features
from labelless.engine import OptimConfig, TrainLoop
from labelless.engine.distributed import gather_cat
from labelless.engine.precision import full_precision
from labelless.engine.pseudo import FlipTracker
from labelless.errors import ConfigError
from labelless.methods.base import Classifier, FitContext, FitResult, Method, Runtime
from labelless.registry import CLASSIFIERS, METHODS
from labelless.scoring.latte import (
    clip_contrastive_loss,
    mix_texts,
    mixer_weights,
    momentum_update,
    prototype_text,
    prototype_update,
)
from labelless.text import load_captions
from labelless.text.encode import encode_texts
from labelless.utils.lazy import lazy_module
from labelless.views import build_view
from labelless.views.device import DecodedDataset, device_view, materialize

if TYPE_CHECKING:
    from labelless.backbones.base import Backbone

T = lazy_module("torchvision.transforms")  # imported on first use: see labelless.utils.lazy

log = logging.getLogger(__name__)


def latte_optim() -> OptimConfig:
    """OpenCLIP fine-tuning defaults as LaTTe-CLIP's scripts run them (paper + code): AdamW,
    lr 1e-7, wd 0.2 (none on gains/biases/logit scale), betas (0.9, 0.98), eps 1e-6, batch 512,
    cosine with warm-up. Epochs/warm-up depend on the data set (see ``recipes/latteclip``).
    Precision ``auto``: bf16 autocast on CUDA (the official code trains with OpenCLIP's AMP),
    fp32 on CPU; pseudo-labels and mixer weights are fp32 whatever the setting."""
    return OptimConfig(
        optimizer="adamw", lr=1e-7, weight_decay=0.2, no_decay="1d", betas=(0.9, 0.98), eps=1e-6,
        epochs=50, batch_size=512, warmup_steps=10,
    )


# ------------------------------------------------------------------------------- classifier


@CLASSIFIERS.register("latteclip")
class PrototypeTextClassifier(Classifier):
    """Logits ``scale * <I, normalize(P_c)>`` with one embedding per class (LaTTe-CLIP's
    prototype bank, or FLYP's fine-tuned class prompts) on the (fine-tuned) backbone.

    Image features are recomputed without the feature cache: the cache is keyed by the base
    weights' fingerprint, which fine-tuning does not change.
    """

    kind = "latteclip"

    def __init__(self, classnames, backbone_spec, config=None, prototypes: torch.Tensor | None = None):
        super().__init__(classnames, backbone_spec, config)
        self.prototypes = prototypes

    def logits_from(self, embeds: torch.Tensor) -> torch.Tensor:
        """embeds (N, d) normalised image embeddings -> (N, C) logits."""
        P = F.normalize(self.prototypes.to(embeds.device, embeds.dtype), dim=-1)
        return float(self.config.get("logit_scale", 100.0)) * embeds @ P.T

    def predict(self, backbone: Backbone, dataset, rt: Runtime) -> torch.Tensor:
        feats = extract_features(
            backbone, dataset, build_view("global", backbone), seed=rt.seed,
            batch_size=rt.batch_size, num_workers=rt.num_workers, cache_dir=None,
            progress=rt.progress, views_on=rt.views_on,
        )
        return self.logits_from(feats.embeds[:, 0])

    def tensors(self):
        return {"prototypes": self.prototypes}

    def load_tensors(self, tensors):
        self.prototypes = tensors["prototypes"]

    @classmethod
    def from_meta(cls, meta: dict) -> PrototypeTextClassifier:
        return cls(meta["classnames"], meta["backbone"]["spec"], meta["config"])


# ------------------------------------------------------------------------------- shared parts


class ResizedCropView:
    """OpenCLIP's training transform: RandomResizedCrop(S, scale) + normalise (no flip), as
    LaTTe-CLIP trains (OpenCLIP default ``AugmentationCfg.scale = (0.9, 1.0)``)."""

    name = "rrc"

    def __init__(self, backbone: Backbone, scale=(0.9, 1.0)):
        from labelless.views import _interp

        self.scale = tuple(float(s) for s in scale)
        self.tf = T.Compose([
            T.RandomResizedCrop(backbone.image_size, scale=self.scale, interpolation=_interp(backbone)),
            T.ToTensor(),
            T.Normalize(backbone.mean, backbone.std),
        ])

    def __call__(self, img, rng: np.random.Generator) -> torch.Tensor:
        seed = int(rng.integers(0, 2**31 - 1))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.tf(img).unsqueeze(0)  # (1, 3, S, S)

    def config(self) -> dict:
        return {"view": self.name, "scale": list(self.scale)}


def _class_prompts(ctx: FitContext, template: str | None) -> list[str]:
    """``templates[0](c)`` per class: ``template`` if given, else each class's first label text."""
    if template:
        if "{c}" not in template:
            raise ConfigError(f"prototype_template needs '{{c}}', got {template!r}")
        return [template.replace("{c}", c) for c in ctx.classnames]
    return [ctx.label_texts[c][0] for c in ctx.classnames]


def zero_shot_labels(ctx: FitContext) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen zero-shot pseudo-labels of the training images with the class-text ensemble
    (``ctx.texts``): returns ``(labels (N,), confidence (N,))``."""
    rt = ctx.rt
    feats = extract_features(
        ctx.backbone, ctx.train, build_view("global", ctx.backbone), seed=rt.seed,
        batch_size=rt.batch_size, num_workers=rt.num_workers, cache_dir=rt.cache_dir,
        progress=rt.progress, desc="zero-shot pseudo-labels", views_on=rt.views_on,
    )
    classifier = encode_texts(ctx.backbone, ctx.texts).mean_embeddings()  # (C, d)
    logits = 100.0 * feats.embeds[:, 0].to(classifier) @ classifier.T  # (N, C)
    prob = logits.softmax(-1)
    conf, labels = prob.max(-1)
    return labels.cpu(), conf.cpu()


def match_image_texts(paths: list[str], table: dict[str, list[str]]) -> list[str | None]:
    """For each image path, the first text of the entry whose key is the path or its longest
    matching path suffix (``train/cls/img.png`` matches ``/data/x/train/cls/img.png``)."""
    out: list[str | None] = []
    for p in paths:
        parts = Path(p).as_posix().split("/")
        hit = None
        for i in range(len(parts)):
            key = "/".join(parts[i:])
            if key in table:
                hit = table[key][0]
                break
        out.append(hit)
    return out


def _logit_scale_param(backbone: Backbone):
    return getattr(backbone.model, "logit_scale", None)


class _Trainer:
    """Shared TrainLoop plumbing: trainable parameters, device, logit-scale clamp, batches."""

    def __init__(self, ctx: FitContext, trainable: tuple[str, ...], train_logit_scale: bool,
                 max_logit_scale: float):
        self.ctx = ctx
        self.backbone = ctx.backbone
        self.names = select_trainable(self.backbone, list(trainable))
        ls = _logit_scale_param(self.backbone)
        if ls is not None:
            ls.requires_grad_(bool(train_logit_scale))
        self.max_log_scale = float(np.log(max_logit_scale))
        self.device = self.backbone.device
        self.epoch = 0
        self.device_views: dict | None = None  # set by train_dataset when views are made here

    def named_trainable(self):
        return [(n, p) for n, p in self.backbone.model.named_parameters() if p.requires_grad]

    def scale(self) -> torch.Tensor:
        ls = _logit_scale_param(self.backbone)
        if ls is None:
            return torch.tensor(100.0, device=self.device)
        return ls.exp().clamp(max=float(np.exp(self.max_log_scale)))

    def after_step(self, step: int) -> None:
        ls = _logit_scale_param(self.backbone)
        if ls is not None and ls.requires_grad:
            with torch.no_grad():
                ls.clamp_(0, self.max_log_scale)  # OpenCLIP clamps to ln(100) after each step

    def encode_strings(self, strings: list[str]) -> tuple[torch.Tensor, dict[str, int]]:
        """Encode the unique strings once, with grad: ``(U, d)`` normalised and the index."""
        unique = list(dict.fromkeys(strings))
        tok = self.backbone.tokenize(unique).to(self.device)
        emb = F.normalize(self.backbone.encode_tokens(tok), dim=-1)
        return emb, {s: i for i, s in enumerate(unique)}

    def train_dataset(self, crop_scale, seed: int, epoch: int):
        """The training images under :class:`ResizedCropView` (made on the device when the run
        says ``views_on=device``: the loader only decodes, :meth:`images` cuts the views)."""
        view = ResizedCropView(self.backbone, crop_scale)
        if self.ctx.rt.views_on == "device":
            self.device_views = {"train": device_view(view, self.backbone)}
            return DecodedDataset(self.ctx.train, self.device_views, seed=seed, epoch=epoch)
        return ViewDataset(self.ctx.train, {"train": view}, seed=seed, epoch=epoch)

    def images(self, batch) -> torch.Tensor:
        batch = materialize(batch, self.device_views, self.device)
        x = batch["views"]["train"][:, 0].to(self.device)  # (B, 3, S, S)
        return self.backbone.encode_image(x).embeds  # (B, d)


def _refuse_grad_accum(method: str, optim: OptimConfig) -> None:
    """Contrastive methods refuse ``grad_accum > 1``: each micro-batch would see only its own
    images as contrastive negatives (and LaTTe-CLIP's prototype update only its own texts), so
    accumulation changes the loss instead of just splitting the batch."""
    if optim.grad_accum > 1:
        raise ConfigError(
            f"{method}: optim.grad_accum={optim.grad_accum} is not supported: the contrastive loss "
            "draws its negatives (and LaTTe-CLIP's prototype update its texts) from one micro-batch, "
            "so accumulating micro-batches is not the same method as one large batch. Set "
            "optim.grad_accum=1 and either lower optim.batch_size (a deviation from the paper's 512, "
            "to report) or spread the batch over more GPUs with torchrun (negatives are gathered "
            "across ranks)"
        )


# ------------------------------------------------------------------------------- LaTTe-CLIP


@dataclass
class LatteCLIPConfig:
    """LaTTe-CLIP settings (paper/official code unless marked *ours*).

    captions: per-image LMM descriptions ``{image_path: [caption]}`` (``labelless
        describe-images --out``); keys match image paths exactly or by path suffix.
    groups: group descriptions JSON (``labelless describe-images --groups-out``).
    use_class, use_image, use_group: which texts enter the mixer (Table 2 rows; rows 4-6 drop
        the class text).
    mixer: dynamic feature mixer; False gives every text weight 1 (Table 3 "w/o Dynamic Feature
        Mixer").
    loss_ft, loss_zs: weights of the contrastive losses on the fine-tuned and zero-shot
        pseudo-labels (0 = Table 3 "w/o L_ft" / "w/o L_zs"; see ``loss_form``).
    loss_form: how the weights combine. ``official`` (default; the official code's
        ``--use_finetune_pseudolabel`` / ``--use_zeroshot_pseudolabel``):
        ``loss_ft * (L_ft + loss_zs * L_zs)``, both branches always computed and always updating
        the prototypes, so ``loss_ft = 0`` trains nothing but the prototypes; ``separate``
        (*ours*): ``loss_ft * L_ft + loss_zs * L_zs``, and a branch with weight 0 is skipped (no
        loss, no prototype update). Identical at the default weights 1, 1.
    alpha: text share of the prototype-text embedding (code ``--alpha 0.01``; paper "0.99" on
        the prototype).
    momentum: None = the official update (normalised mean of the mixed texts, an EMA with
        mu = 1 - alpha); a float mu uses the paper's explicit ``mu P + (1 - mu) mean(t_bar)``
        (0.0 = Table 3 "w/o Momentum Update").
    prototype_template: class prompt ``templates[0]`` with ``{c}`` for the prototypes and the
        label text (None: the first sentence of each class's label texts, ``--label-texts``).
    trainable: parameter groups to train (official: the whole model).
    train_logit_scale, max_logit_scale: OpenCLIP's learnable temperature, clamped to 100.
    crop_scale: RandomResizedCrop scale of the training view (OpenCLIP default (0.9, 1.0)).
    require_captions: *ours*: fail when ``use_image`` and no caption matches any training image
        (images without a caption just drop that text).
    optim: optimisation (:func:`latte_optim`: lr 1e-7, wd 0.2, batch 512); ``grad_accum`` must
        stay 1 (see :func:`_refuse_grad_accum`).
    """

    captions: str | None = None
    groups: str | None = None
    use_class: bool = True
    use_image: bool = True
    use_group: bool = True
    mixer: bool = True
    loss_ft: float = 1.0
    loss_zs: float = 1.0
    loss_form: Literal["official", "separate"] = "official"
    alpha: float = 0.01
    momentum: float | None = None
    prototype_template: str | None = None
    trainable: tuple[str, ...] = ("all",)
    train_logit_scale: bool = True
    max_logit_scale: float = 100.0
    crop_scale: tuple[float, float] = (0.9, 1.0)
    require_captions: bool = True
    optim: OptimConfig = field(default_factory=latte_optim)

    def __post_init__(self):
        if isinstance(self.optim, dict):
            self.optim = OptimConfig(**self.optim)
        self.trainable = tuple(self.trainable)
        self.crop_scale = tuple(self.crop_scale)
        _refuse_grad_accum("latteclip", self.optim)
        if not (self.use_class or self.use_image or self.use_group):
            raise ConfigError("latteclip: enable at least one of use_class, use_image, use_group")
        if self.loss_ft < 0 or self.loss_zs < 0 or self.loss_ft + self.loss_zs == 0:
            raise ConfigError("latteclip: loss_ft and loss_zs must be >= 0 and not both 0")
        if self.loss_form not in ("official", "separate"):
            raise ConfigError(f"latteclip: loss_form must be official or separate, got {self.loss_form!r}")
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"latteclip: alpha must be in [0, 1], got {self.alpha}")
        if self.momentum is not None and not 0 <= self.momentum <= 1:
            raise ConfigError(f"latteclip: momentum must be in [0, 1] or null, got {self.momentum}")
        if self.use_image and not self.captions:
            raise ConfigError(
                "latteclip: use_image needs captions=F.json (from `labelless describe-images "
                "--out`); or set use_image=false"
            )
        if self.use_group and not self.groups:
            raise ConfigError(
                "latteclip: use_group needs groups=F.json (from `labelless describe-images "
                "--groups-out`); or set use_group=false"
            )


class LatteTrainer(_Trainer):
    """The per-step LaTTe-CLIP computation (TrainLoop's method object)."""

    def __init__(self, ctx: FitContext, cfg: LatteCLIPConfig, zs_labels: torch.Tensor,
                 captions: list[str | None], group_pool: dict[int, list[str]]):
        super().__init__(ctx, cfg.trainable, cfg.train_logit_scale, cfg.max_logit_scale)
        self.cfg = cfg
        self.class_prompts = _class_prompts(ctx, cfg.prototype_template)
        with torch.no_grad():
            self.bank = F.normalize(self.backbone.encode_text(self.class_prompts).float(), dim=-1)  # (C, d)
        self.mixer_bank = self.bank.clone()  # snapshot at each epoch start (official)
        self.zs_labels = zs_labels
        self.captions = captions
        self.group_pool = group_pool
        self.seed = ctx.rt.seed
        self._pl_correct = {"ft": 0, "zs": 0}
        self._pl_count = 0
        self.flips = FlipTracker(len(ctx.train))  # label-free: churn of the fine-tuned pseudo-labels

    # -- hooks -------------------------------------------------------------------------------
    def dataset_for_epoch(self, epoch: int):
        self.epoch = epoch
        self.mixer_bank = self.bank.clone()
        return self.train_dataset(self.cfg.crop_scale, self.seed, epoch)

    def state_dict(self):
        return {"bank": self.bank.cpu(), "mixer_bank": self.mixer_bank.cpu(), **self.flips.state_dict()}

    def load_state_dict(self, state):
        self.bank = state["bank"].to(self.device)
        self.mixer_bank = state["mixer_bank"].to(self.device)
        self.flips.load_state_dict(state)

    def on_epoch_end(self, epoch: int) -> dict:
        row = {}
        if self._pl_count:
            row = {f"pl_acc_{k}": 100.0 * v / self._pl_count for k, v in self._pl_correct.items()}
        self._pl_correct = {"ft": 0, "zs": 0}
        self._pl_count = 0
        return {**row, **self.flips.epoch_end()}

    # -- texts -------------------------------------------------------------------------------
    def group_text(self, index: int, zs: int) -> str | None:
        pool = self.group_pool.get(zs)
        if not pool:
            return None
        rng = np.random.default_rng([self.seed, self.epoch, index, 7])
        return pool[int(rng.integers(0, len(pool)))]

    def branch_texts(self, y: torch.Tensor, idx: list[int], zs: list[int]):
        """Strings ``(B, 3)`` (label, image, group; None where absent) for pseudo-labels ``y``."""
        rows = []
        for b, i in enumerate(idx):
            rows.append([
                self.class_prompts[int(y[b])] if self.cfg.use_class else None,
                self.captions[i] if self.cfg.use_image else None,
                self.group_text(i, zs[b]) if self.cfg.use_group else None,
            ])
        return rows

    def mixed(self, rows, emb: torch.Tensor, index: dict[str, int], y: torch.Tensor):
        """Prototype-text embeddings ``(B, d)`` and mixed texts ``(B, d)`` for one branch."""
        B, d = len(rows), emb.shape[1]
        ids = torch.tensor([[index[s] if s is not None else 0 for s in r] for r in rows], device=self.device)
        mask = torch.tensor([[s is not None for s in r] for r in rows], device=self.device)
        texts = emb[ids] * mask.unsqueeze(-1).to(emb.dtype)  # (B, 3, d)
        if self.cfg.mixer:
            with full_precision(self.device):  # top1 - top2 margins in fp32 always
                w = mixer_weights(texts, self.mixer_bank, mask).float()  # (B, 3)
        else:
            w = mask.to(emb.dtype)
        t_bar = mix_texts(texts, w)  # (B, d)
        P_y = self.bank.to(emb.dtype)[y]  # (B, d), no grad
        assert t_bar.shape == (B, d)
        return prototype_text(P_y, t_bar, self.cfg.alpha), t_bar

    def training_step(self, batch, step: int) -> dict:
        cfg = self.cfg
        idx = batch["index"].tolist()
        img = self.images(batch)  # (B, d)
        with torch.no_grad(), full_precision(self.device):
            y_ft = (img.detach().float() @ F.normalize(self.bank, dim=-1).T).argmax(-1)  # (B,)
        self.flips.update(batch["index"], y_ft)
        y_zs = self.zs_labels[batch["index"]].to(self.device)  # (B,)
        zs = y_zs.tolist()
        official = cfg.loss_form == "official"
        branches = []  # the official form always runs both branches (and updates P from both)
        if official or cfg.loss_ft > 0:
            branches.append(("ft", cfg.loss_ft, y_ft))
        if official or cfg.loss_zs > 0:
            branches.append(("zs", cfg.loss_zs, y_zs))
        rows = {name: self.branch_texts(y, idx, zs) for name, _, y in branches}
        strings = [s for r in rows.values() for row in r for s in row if s is not None]
        emb, index = self.encode_strings(strings) if strings else (None, {})
        scale = self.scale()
        out: dict[str, torch.Tensor] = {}
        loss = img.new_zeros(())
        parts: dict[str, torch.Tensor] = {}
        updates_t, updates_tbar, updates_y = [], [], []
        img_all = gather_cat(img)  # (W*B, d): contrastive negatives from every rank's batch
        for name, weight, y in branches:
            t, t_bar = self.mixed(rows[name], emb, index, y)
            part = parts[name] = clip_contrastive_loss(img_all, gather_cat(t), scale)
            loss = loss + weight * part
            out[f"loss_{name}"] = part.detach()
            # the prototype update sees the global batch, so every rank keeps the same bank
            updates_t.append(gather_cat(t.detach()))
            updates_tbar.append(gather_cat(t_bar.detach()))
            updates_y.append(gather_cat(y))
        if official:  # the official code: w_ft * (L_ft + w_zs * L_zs) (train.py, train_one_epoch_v2)
            loss = cfg.loss_ft * (parts["ft"] + cfg.loss_zs * parts["zs"])
        labels = torch.cat(updates_y)
        if cfg.momentum is None:
            self.bank = prototype_update(self.bank, torch.cat(updates_t).float(), labels)
        else:
            self.bank = momentum_update(self.bank, torch.cat(updates_tbar).float(), labels, cfg.momentum)
        truth = batch["label"].to(self.device)
        known = truth >= 0
        if known.any():
            self._pl_correct["ft"] += int((y_ft[known] == truth[known]).sum())
            self._pl_correct["zs"] += int((y_zs[known] == truth[known]).sum())
            self._pl_count += int(known.sum())
        out["loss"] = loss
        out["logit_scale"] = scale.detach()
        return out


def load_group_pool(path: str, classnames: list[str]) -> dict[int, list[str]]:
    """Group captions per class index from a groups JSON (classes must be task classes)."""
    from labelless.errors import did_you_mean
    from labelless.textgen.generate import load_groups

    groups = load_groups(path)
    index = {c: k for k, c in enumerate(classnames)}
    pool: dict[int, list[str]] = {}
    for g in groups:
        c = g["class"]
        if c not in index:
            raise ConfigError(
                f"groups file '{path}': class '{c}' is not a class of the task.{did_you_mean(c, classnames)}"
            )
        pool.setdefault(index[c], []).append(g["caption"])
    return pool


def _tuned(backbone: Backbone, names: list[str]) -> dict[str, torch.Tensor]:
    params = dict(backbone.model.named_parameters())
    return {n: params[n].detach().cpu().clone() for n in names}


@METHODS.register("latteclip")
class LatteCLIP(Method):
    """LaTTe-CLIP: prototype fine-tuning of both towers with LMM image/group descriptions."""

    Config = LatteCLIPConfig
    name = "latteclip"
    trains = True
    ddp_exact = True  # contrastive negatives and prototype updates gathered across ranks

    def build_trainer(self, ctx: FitContext) -> LatteTrainer:
        """Zero-shot labels, caption matching and the group pool; the trainer ready to run."""
        cfg = self.cfg
        zs_labels, _ = zero_shot_labels(ctx)
        paths = list(ctx.train.paths)
        captions: list[str | None] = [None] * len(paths)
        if cfg.use_image:
            captions = match_image_texts(paths, load_captions(cfg.captions))
            found = sum(c is not None for c in captions)
            if found == 0 and cfg.require_captions:
                raise ConfigError(
                    f"latteclip: no key of captions file '{cfg.captions}' matches any of the "
                    f"{len(paths)} training images (e.g. '{paths[0]}'); keys must be image paths "
                    "or path suffixes such as 'class/img.jpg'"
                )
            if found < len(paths):
                log.warning("latteclip: %d of %d training images have no caption", len(paths) - found, len(paths))
        pool = load_group_pool(cfg.groups, ctx.classnames) if cfg.use_group else {}
        return LatteTrainer(ctx, cfg, zs_labels, captions, pool)

    def fit(self, ctx: FitContext) -> FitResult:
        trainer = self.build_trainer(ctx)
        loop = TrainLoop(trainer, trainer.dataset_for_epoch, self.cfg.optim, ctx.out_dir,
                         seed=ctx.rt.seed, num_workers=ctx.rt.num_workers, progress=ctx.rt.progress)
        history = loop.run(resume=ctx.resume)
        from labelless.config import to_dict

        clf = PrototypeTextClassifier(ctx.classnames, ctx.backbone.spec, {"logit_scale": 100.0},
                                      trainer.bank.detach().cpu())
        info = {"config": to_dict(self.cfg), "trained_parameters": len(trainer.names)}
        return FitResult(clf, _tuned(ctx.backbone, trainer.names), history, info)


# ------------------------------------------------------------------------------- FLYP + PL


@dataclass
class FlypPLConfig:
    """FLYP + pseudo-labels, LaTTe-CLIP's baseline (paper Sec. 4, appendix B).

    Contrastive fine-tuning of both towers on ``(image, templates[0](y_hat))`` pairs where
    ``y_hat`` is the current model's zero-shot prediction, recomputed every step (paper: "after
    every weight update"); inference is zero-shot with the fine-tuned model on the label texts.
    Same hyper-parameters as LaTTe-CLIP; no weight ensembling (paper).

    pseudo_labels: ``recalculated`` (default, the paper: the current model's prediction with
        the training prompts, every step) or ``zeroshot`` (the official code,
        ``train_one_epoch_original_clip``: the frozen initial model's zero-shot class with the
        class texts ``texts``, computed once, as LaTTe-CLIP's ``y_zs``).
    prototype_template: the training prompt (None: each class's first label text).
    trainable, train_logit_scale, max_logit_scale, crop_scale, optim: as in LaTTe-CLIP
        (``optim.grad_accum`` must stay 1).
    """

    pseudo_labels: Literal["recalculated", "zeroshot"] = "recalculated"
    prototype_template: str | None = None
    trainable: tuple[str, ...] = ("all",)
    train_logit_scale: bool = True
    max_logit_scale: float = 100.0
    crop_scale: tuple[float, float] = (0.9, 1.0)
    optim: OptimConfig = field(default_factory=latte_optim)

    def __post_init__(self):
        if isinstance(self.optim, dict):
            self.optim = OptimConfig(**self.optim)
        self.trainable = tuple(self.trainable)
        self.crop_scale = tuple(self.crop_scale)
        _refuse_grad_accum("flyp-pl", self.optim)
        if self.pseudo_labels not in ("recalculated", "zeroshot"):
            raise ConfigError(
                f"flyp-pl: pseudo_labels must be recalculated or zeroshot, got {self.pseudo_labels!r}"
            )


class FlypTrainer(_Trainer):
    def __init__(self, ctx: FitContext, cfg: FlypPLConfig):
        super().__init__(ctx, cfg.trainable, cfg.train_logit_scale, cfg.max_logit_scale)
        self.cfg = cfg
        self.class_prompts = _class_prompts(ctx, cfg.prototype_template)
        self.seed = ctx.rt.seed
        # official variant: the frozen initial model's zero-shot classes, computed once
        self.zs_labels = zero_shot_labels(ctx)[0] if cfg.pseudo_labels == "zeroshot" else None
        self._correct = 0
        self._count = 0
        self.flips = FlipTracker(len(ctx.train))  # label-free: pseudo-label churn per epoch

    def dataset_for_epoch(self, epoch: int):
        self.epoch = epoch
        return self.train_dataset(self.cfg.crop_scale, self.seed, epoch)

    def on_epoch_end(self, epoch: int) -> dict:
        row = {"pl_acc": 100.0 * self._correct / self._count} if self._count else {}
        self._correct = self._count = 0
        return {**row, **self.flips.epoch_end()}

    def state_dict(self):
        return self.flips.state_dict()

    def load_state_dict(self, state):
        self.flips.load_state_dict(state)

    @torch.no_grad()
    def pseudo_labels(self, img: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Pseudo-labels ``(B,)`` of the images with embeddings ``img (B, d)`` and data set
        indices ``index (B,)`` (see ``FlypPLConfig.pseudo_labels``)."""
        if self.zs_labels is not None:
            return self.zs_labels[index.cpu()].to(self.device)
        with torch.no_grad():
            cls_emb = self.backbone.encode_text(self.class_prompts)  # (C, d), current model
            with full_precision(self.device):  # the argmax in fp32 always
                return (img.detach().float() @ cls_emb.float().T).argmax(-1)  # (B,)

    def training_step(self, batch, step: int) -> dict:
        img = self.images(batch)  # (B, d)
        y = self.pseudo_labels(img, batch["index"])  # (B,)
        self.flips.update(batch["index"], y)
        strings = [self.class_prompts[int(k)] for k in y]
        emb, index = self.encode_strings(strings)
        t = emb[torch.tensor([index[s] for s in strings], device=self.device)]  # (B, d)
        scale = self.scale()
        # contrastive negatives from the global batch (all ranks under torchrun)
        loss = clip_contrastive_loss(gather_cat(img), gather_cat(t), scale)
        truth = batch["label"].to(self.device)
        known = truth >= 0
        self._correct += int((y[known] == truth[known]).sum())
        self._count += int(known.sum())
        return {"loss": loss, "logit_scale": scale.detach()}


@METHODS.register("flyp-pl")
class FlypPL(Method):
    """FLYP + pseudo-labels: contrastive fine-tuning on the current zero-shot pseudo-labels."""

    Config = FlypPLConfig
    name = "flyp-pl"
    trains = True
    ddp_exact = True  # contrastive negatives gathered across ranks

    def fit(self, ctx: FitContext) -> FitResult:
        trainer = FlypTrainer(ctx, self.cfg)
        loop = TrainLoop(trainer, trainer.dataset_for_epoch, self.cfg.optim, ctx.out_dir,
                         seed=ctx.rt.seed, num_workers=ctx.rt.num_workers, progress=ctx.rt.progress)
        history = loop.run(resume=ctx.resume)
        with torch.no_grad():
            protos = encode_texts(ctx.backbone, ctx.label_texts).mean_embeddings().cpu()
        from labelless.config import to_dict

        clf = PrototypeTextClassifier(ctx.classnames, ctx.backbone.spec, {"logit_scale": 100.0}, protos)
        return FitResult(clf, _tuned(ctx.backbone, trainer.names), history,
                         {"config": to_dict(self.cfg)})
