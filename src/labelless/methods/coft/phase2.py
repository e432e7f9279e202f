"""CoFT phase 2: full fine-tuning of the image tower + a linear head, CoFT+'s momentum contrast."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from labelless.engine import distributed
from labelless.methods.coft.common import _head_input, _MonitorMixin
from labelless.methods.coft.config import CoFTConfig
from labelless.scoring.coft import class_balance_weights, moco_loss
from labelless.views.device import materialize

if TYPE_CHECKING:
    from labelless.backbones.base import Backbone


class Phase2(_MonitorMixin):
    """Phase 2: full fine-tuning of the image tower + a linear head on the collaborative labels
    (DeFT's phase 2), with CoFT+'s optional momentum-contrastive term."""

    def __init__(self, backbone: Backbone, cfg: CoFTConfig, labels, subset_idx, param_names, head, seed):
        self.bb = backbone
        self.cfg = cfg
        self.labels = labels.long().cpu()  # (N,), -1 = dropped
        self.subset_idx = subset_idx.long().cpu()
        self.head = head
        self.seed = seed
        self.class_weight = None
        if cfg.phase2_balance == "reweight":
            kept = self.labels[self.subset_idx]
            self.class_weight = class_balance_weights(kept, head.out_features).to(backbone.device)
        own = dict(backbone.model.named_parameters())
        self.param_names = list(param_names)
        self.params = [(n, own[n]) for n in self.param_names]
        self.key = None
        if cfg.moco:
            self.key = copy.deepcopy(backbone).eval()
            for p in self.key.parameters():
                p.requires_grad_(False)
            self.key_own = dict(self.key.model.named_parameters())
            d = backbone.embed_dim
            g = torch.Generator().manual_seed(seed + 17)
            self.queue = F.normalize(torch.randn(cfg.moco_queue, d, generator=g), dim=1).to(backbone.device)
            self.queue_labels = torch.full((cfg.moco_queue,), -1, dtype=torch.long, device=backbone.device)
            self.queue_ptr = 0
        self._pending: list = []
        self.device_views: dict | None = None  # set by fit when the views are made on the device

    def named_trainable(self):
        return [(f"backbone.{n}", p) for n, p in self.params] + [(f"head.{n}", p) for n, p in self.head.named_parameters()]

    def training_step(self, batch, step):
        dev = self.bb.device
        batch = materialize(batch, self.device_views, dev)  # views made here when on the device
        x = batch["views"]["img"][:, 0].to(dev)
        idx = self.subset_idx[batch["index"]]
        y = self.labels[idx].to(dev)
        out = self.bb.encode_image(x, tokens=self.cfg.head_feature == "cls")
        logits = self.head(_head_input(out, self.cfg.head_feature))
        if self.class_weight is None:
            ce = F.cross_entropy(logits, y)
        else:  # per-sample weights over the batch size (not their sum): exact under DDP averaging
            ce = (F.cross_entropy(logits, y, reduction="none") * self.class_weight[y]).mean()
        res = {"ce": ce.detach()}
        loss = ce
        if self.key is not None:
            with torch.no_grad():
                k = self.key.encode_image(batch["views"]["key"][:, 0].to(dev)).embeds
            lab = y if self.cfg.moco_supervised else None
            qlab = self.queue_labels if self.cfg.moco_supervised else None
            mc = moco_loss(out.embeds, k, self.queue, self.cfg.moco_temperature, lab, qlab)
            loss = loss + self.cfg.moco_weight * mc
            res["moco"] = mc.detach()
            # enqueued after the backward pass (after_step), from every rank: one shared queue
            self._pending.append((distributed.gather_cat(k), distributed.gather_cat(y)))
        res["loss"] = loss
        res["train_acc"] = (logits.argmax(1) == y).float().mean()
        return res

    @torch.no_grad()
    def _enqueue(self, k, y):
        n = k.shape[0]
        q = self.queue.shape[0]
        pos = (self.queue_ptr + torch.arange(n, device=k.device)) % q
        self.queue[pos] = k[-q:] if n > q else k
        self.queue_labels[pos] = y[-q:] if n > q else y
        self.queue_ptr = int((self.queue_ptr + n) % q)

    @torch.no_grad()
    def after_step(self, step):
        if self.key is None:
            return
        for k, y in self._pending:
            self._enqueue(k, y)
        self._pending = []
        m = self.cfg.moco_momentum
        for n, p in self.params:
            self.key_own[n].mul_(m).add_(p.detach(), alpha=1 - m)

    def state_dict(self):
        if self.key is None:
            return {}
        return {"key": {n: self.key_own[n].detach().cpu() for n, _ in self.params},
                "queue": self.queue.cpu(), "queue_labels": self.queue_labels.cpu(), "queue_ptr": self.queue_ptr}

    def load_state_dict(self, state):
        if self.key is None or not state:
            return
        with torch.no_grad():
            for n, t in state["key"].items():
                self.key_own[n].copy_(t)
            self.queue.copy_(state["queue"])
            self.queue_labels.copy_(state["queue_labels"])
        self.queue_ptr = int(state["queue_ptr"])

