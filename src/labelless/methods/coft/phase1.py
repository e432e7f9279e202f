"""CoFT phase 1: dual prompts + a lightweight visual module + the vision-side head."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from labelless.adapters import VPTDeep
from labelless.backbones import ImageOutput
from labelless.engine import distributed
from labelless.engine.loop import epoch_steps
from labelless.methods.base import Runtime
from labelless.methods.coft.common import _features, _head_input, _MonitorMixin, make_head
from labelless.methods.coft.config import CoFTConfig
from labelless.prompt_learner import PromptLearner
from labelless.scoring.coft import clean_probability, complementary_labels, deft_losses

log = logging.getLogger(__name__)


class Phase1(_MonitorMixin):
    """Phase 1: dual prompts + VPT-deep + vision head on the high-confidence subset.

    Training-step objective (one batch, pseudo-labels y):
    ``L = L_cls(s+, y) + neg_weight * L_neg + head_weight * CE(head(f), y)[clean]`` with
    ``s± = scale * <v, t±_c>`` (v from the VPT-adapted encoder), DeFT's losses
    (:func:`labelless.scoring.coft.deft_losses`) and the head trained on the samples the
    text side's gate marks clean (its peer's filter).
    """

    def __init__(self, backbone, cfg: CoFTConfig, classnames, pseudo, subset_idx, truth, scale,
                 text_embeds, seed: int, n_train: int, cls_norm: float = 1.0):
        self.bb = backbone
        self.cfg = cfg
        self.C = len(classnames)
        self.pseudo = pseudo.long().cpu()  # (N,) labels of the whole train set
        self.subset_idx = subset_idx.long().cpu()  # (n,) positions in the train set
        self.truth = truth
        self.scale = scale
        self.seed = seed
        g = torch.Generator().manual_seed(seed)
        self.prompts = PromptLearner(backbone, classnames, ("pos", "neg"), n_ctx=cfg.n_ctx,
                                     init=cfg.ctx_init, init_std=cfg.ctx_init_std, generator=g)
        self.adapter = VPTDeep(backbone, cfg.vpt_tokens, cfg.vpt_layers, generator=g)
        self.head = make_head(backbone, text_embeds, cfg.head_feature, cfg.head_init, scale, g, cls_norm)
        self.steps_per_epoch = epoch_steps(len(self.subset_idx), cfg.phase1.batch_size)
        self._no_clean = 0  # batches of this epoch without a clean sample (after warm-up)
        self._reset_monitor(n_train)

    def named_trainable(self):
        return ([(f"prompts.{n}", p) for n, p in self.prompts.named_parameters()]
                + [(f"adapter.{n}", p) for n, p in self.adapter.named_parameters()]
                + [(f"head.{n}", p) for n, p in self.head.named_parameters()])

    def logits(self, out) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``s+ (B, C)``, ``s- (B, C)`` and head logits for an ``ImageOutput`` of the adapted encoder."""
        v = out.embeds
        t_pos, t_neg = self.prompts("pos"), self.prompts("neg")  # (C, d) each
        s_pos = self.scale * v @ t_pos.T
        v_neg = v.detach() if self.cfg.neg_detach_image else v
        s_neg = self.scale * v_neg @ t_neg.T
        h = self.head(_head_input(out, self.cfg.head_feature).detach())
        return s_pos, s_neg, h

    def training_step(self, batch, step):
        dev = self.bb.device
        x = batch["views"]["img"][:, 0].to(dev)  # (B, 3, S, S)
        idx = self.subset_idx[batch["index"]]
        y = self.pseudo[idx].to(dev)
        with self.adapter.attached():
            out = self.bb.encode_image(x, tokens=self.cfg.head_feature == "cls")
            s_pos, s_neg, h = self.logits(out)
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
        """End of the round: take the lightweight module off the backbone."""
        self.adapter.detach()

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
        return {"text": s_pos.cpu(), "p_yes": clean_probability(s_pos, s_neg).cpu(), "vision": h.cpu()}

