"""CoFT phase 1: dual prompts + a lightweight visual module + the vision-side head."""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from labelless.adapters import LoraAdapter, VPTDeep
from labelless.backbones import ImageOutput
from labelless.engine import distributed
from labelless.engine.loop import epoch_steps
from labelless.errors import ConfigError
from labelless.methods.base import Runtime
from labelless.methods.coft.common import _features, _head_input, _MonitorMixin, make_head
from labelless.methods.coft.config import CoFTConfig
from labelless.prompt_learner import PromptLearner
from labelless.scoring.coft import clean_probability, complementary_labels, deft_losses
from labelless.views.device import materialize

if TYPE_CHECKING:
    from labelless.backbones.base import Backbone

log = logging.getLogger(__name__)


def build_adapter(backbone: Backbone, cfg: CoFTConfig, generator: torch.Generator, seed: int):
    """Phase 1's lightweight visual module on ``backbone`` (``cfg.adapter``), detached."""
    if cfg.adapter == "lora":
        return LoraAdapter(backbone, seed=seed, **dict(cfg.lora_options))
    return VPTDeep(backbone, cfg.vpt_tokens, cfg.vpt_layers, generator=generator)


def vision_copy(backbone: Backbone):
    """A frozen copy of ``backbone`` for ``vision_model=separate`` (its own weights, same values)."""
    copy_ = copy.deepcopy(backbone)
    for p in copy_.model.parameters():
        p.requires_grad_(False)
    return copy_


class Phase1(_MonitorMixin):
    """Phase 1: dual prompts + a lightweight visual module + vision head on the high-confidence subset.

    Training-step objective (one batch, pseudo-labels y):
    ``L = L_cls(s+, y) + neg_weight * L_neg + head_weight * CE(head(f), y)[clean]`` with
    ``s± = scale * <v, t±_c>`` (v from the adapted encoder: VPT-deep or LoRA), DeFT's losses
    (:func:`labelless.scoring.coft.deft_losses`) and the head trained on the samples the
    text side's gate marks clean (its peer's filter). The head reads ``f``, the detached [CLS] of
    the same adapted encoder (``vision_model=shared``), or that of a separate copy of the image
    tower with its own lightweight module, trained by the head's loss (``separate``).

    class_texts: one text per class (``pos_ctx_init=class_text``: the positive contexts start
        from their token embeddings). vision_backbone: the copy for ``vision_model=separate``
        (made here when not given; ``fit`` shares one across rounds: its weights stay frozen).
    """

    def __init__(self, backbone: Backbone, cfg: CoFTConfig, classnames, pseudo, subset_idx, truth, scale,
                 text_embeds, seed: int, n_train: int, cls_norm: float = 1.0,
                 class_texts: list[str] | None = None, vision_backbone=None):
        self.bb = backbone
        self.cfg = cfg
        self.C = len(classnames)
        self.pseudo = pseudo.long().cpu()  # (N,) labels of the whole train set
        self.subset_idx = subset_idx.long().cpu()  # (n,) positions in the train set
        self.truth = truth
        self.scale = scale
        self.seed = seed
        g = torch.Generator().manual_seed(seed)
        class_init = None
        if cfg.pos_ctx_init == "class_text":
            if class_texts is None:
                raise ConfigError("pos_ctx_init=class_text needs one text per class (class_texts)")
            class_init = {"pos": list(class_texts)}
        self.prompts = PromptLearner(backbone, classnames, ("pos", "neg"), n_ctx=cfg.n_ctx,
                                     init=cfg.ctx_init, init_std=cfg.ctx_init_std, generator=g,
                                     class_init=class_init)
        self.vision_bb = self.vision_adapter = None
        if cfg.vision_model == "separate":  # copied before any module is put on the backbone
            self.vision_bb = vision_backbone if vision_backbone is not None else vision_copy(backbone)
        self.adapter = build_adapter(backbone, cfg, g, seed)
        if self.vision_bb is not None:
            self.vision_adapter = build_adapter(self.vision_bb, cfg, g, seed + 1)
        self.head = make_head(backbone, text_embeds, cfg.head_feature, cfg.head_init, scale, g, cls_norm)
        self.steps_per_epoch = epoch_steps(len(self.subset_idx), cfg.phase1.batch_size)
        self._no_clean = 0  # batches of this epoch without a clean sample (after warm-up)
        self.device_views: dict | None = None  # set by fit when the views are made on the device
        self._reset_monitor(n_train)

    def named_trainable(self):
        return ([(f"prompts.{n}", p) for n, p in self.prompts.named_parameters()]
                + [(f"adapter.{n}", p) for n, p in self.adapter.named_parameters()]
                + ([] if self.vision_adapter is None
                   else [(f"vision_adapter.{n}", p) for n, p in self.vision_adapter.named_parameters()])
                + [(f"head.{n}", p) for n, p in self.head.named_parameters()])

    def logits(self, out) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``s+ (B, C)``, ``s- (B, C)`` and head logits for an ``ImageOutput`` of the adapted encoder
        (head logits None with a separate vision model: :meth:`vision_logits`)."""
        v = out.embeds
        t_pos, t_neg = self.prompts("pos"), self.prompts("neg")  # (C, d) each
        # the cosine logits feed the cleanliness gate (p_yes > 0.5) and the pseudo-label losses:
        # always fp32, also when the run's precision autocasts the encoders to bf16
        with torch.autocast(v.device.type, enabled=False):
            v32 = v.float()
            s_pos = self.scale * v32 @ t_pos.float().T
            v_neg = v32.detach() if self.cfg.neg_detach_image else v32
            s_neg = self.scale * v_neg @ t_neg.float().T
        h = None
        if self.vision_bb is None:
            h = self.head(_head_input(out, self.cfg.head_feature).detach())
        return s_pos, s_neg, h

    def vision_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C)`` head logits of the separate vision model on images ``x (B, 3, S, S)``."""
        with self.vision_adapter.attached():
            out = self.vision_bb.encode_image(x, tokens=self.cfg.head_feature == "cls")
        return self.head(_head_input(out, self.cfg.head_feature))

    def training_step(self, batch, step):
        dev = self.bb.device
        batch = materialize(batch, self.device_views, dev)  # views made here when on the device
        x = batch["views"]["img"][:, 0].to(dev)  # (B, 3, S, S)
        idx = self.subset_idx[batch["index"]]
        y = self.pseudo[idx].to(dev)
        with self.adapter.attached():
            out = self.bb.encode_image(x, tokens=self.cfg.head_feature == "cls")
            s_pos, s_neg, h = self.logits(out)
        if h is None:
            h = self.vision_logits(x)
        warm = step // self.steps_per_epoch < self.cfg.warmup_epochs
        # complementary labels of the global batch (drawn once per step), this rank's slice: a
        # single process with the whole batch draws the same ones
        ws, r, b = distributed.world_size(), distributed.rank(), len(y)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        comp = complementary_labels(y.repeat(ws), self.C, g)[r * b:(r + 1) * b]
        # clean-sample means over the global batch: per-rank denominators = global count / ranks
        denominator = None
        if ws > 1:
            def denominator(count):
                return distributed.all_sum(count.float()).clamp_min(1) / ws
        parts = deft_losses(s_pos, s_neg, y, comp, warmup=warm, clean_denominator=denominator,
                            neg_log=self.cfg.neg_log)
        clean = parts["clean"]
        if not warm:
            n_clean = clean.sum().float()
            if ws > 1:
                n_clean = distributed.all_sum(n_clean)
            if float(n_clean) == 0:
                self._no_clean += 1
        ce_h = F.cross_entropy(h, y, reduction="none")
        head = (ce_h * clean).sum() / parts["n_clean"]
        loss = parts["cls"] + self.cfg.neg_weight * parts["neg"] + self.cfg.head_weight * head
        self._record(idx, parts["p_clean"] > 0.5)
        return {"loss": loss, "cls": parts["cls"].detach(), "neg": parts["neg"].detach(),
                "head": head.detach(), "batch_clean": clean.float().mean()}

    def release(self) -> None:
        """End of the round: take the lightweight modules off the backbones."""
        for adapter in (self.adapter, self.vision_adapter):
            if adapter is not None:
                getattr(adapter, "release", adapter.detach)()

    def state_dict(self):
        # the epoch's monitoring marks, so that a mid-epoch resume logs the same epoch statistics
        return {"seen": self._seen.clone(), "selected": self._selected.clone()}

    def load_state_dict(self, state):
        if state:
            self._seen, self._selected = state["seen"].clone(), state["selected"].clone()

    def on_epoch_end(self, epoch):
        if self._no_clean:
            log.warning(
                "coft phase 1, epoch %d: %d batch(es) had no clean sample after warm-up; their "
                "classification loss was 0 (DeFT's would be NaN) and only L_neg trained on them",
                epoch, self._no_clean,
            )
        self._no_clean = 0
        row = self._monitor_row(self.pseudo, self.truth, "clean")
        self._reset_monitor(len(self.pseudo))
        return row

    @torch.no_grad()
    def infer(self, dataset, rt: Runtime) -> dict[str, torch.Tensor]:
        """Text-side logits, cleanliness and vision-side logits for every image (global view)."""
        with self.adapter.attached():
            feats = _features(self.bb, dataset, rt, tokens=self.cfg.head_feature == "cls", cache=False)
        out = ImageOutput(embeds=feats.embeds[:, 0].to(self.bb.device),
                          cls=None if feats.cls is None else feats.cls[:, 0].to(self.bb.device))
        s_pos, s_neg, h = self.logits(out)
        if h is None:
            with self.vision_adapter.attached():
                fv = _features(self.vision_bb, dataset, rt, tokens=self.cfg.head_feature == "cls", cache=False)
            dev = self.vision_bb.device
            h = self.head(_head_input(ImageOutput(embeds=fv.embeds[:, 0].to(dev),
                                                  cls=None if fv.cls is None else fv.cls[:, 0].to(dev)),
                                      self.cfg.head_feature))
        return {"text": s_pos.cpu(), "p_yes": clean_probability(s_pos, s_neg).cpu(), "vision": h.cpu()}

