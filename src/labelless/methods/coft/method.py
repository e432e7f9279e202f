"""The CoFT / CoFT+ methods: ``fit`` runs the zero-shot start, the rounds (phase 1 + the
collaboration) and phase 2 in sequence, each a function of this module."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from labelless.backbones import trainable_report
from labelless.config import to_dict
from labelless.data.features import ViewDataset
from labelless.engine import TrainLoop
from labelless.methods.base import FitContext, FitResult, Method
from labelless.methods.coft.classifier import CoFTClassifier
from labelless.methods.coft.common import _features, _visual_projection, make_head
from labelless.methods.coft.config import CoFTConfig, CoFTPlusConfig
from labelless.methods.coft.phase1 import Phase1, vision_copy
from labelless.methods.coft.phase2 import Phase2
from labelless.registry import METHODS
from labelless.scoring.coft import (
    CONFIRMED,
    RELABELLED,
    Collaboration,
    collaborate,
    gather_clean,
    per_class_top,
    selection_stats,
)
from labelless.text.encode import encode_texts
from labelless.views import build_view
from labelless.views.device import DecodedDataset, device_view, has_device_twin

log = logging.getLogger(__name__)


def device_views(ctx: FitContext, views: dict) -> dict | None:
    """The device twins of the training ``views`` when the run makes its views on the device
    (``views_on=device``: the loader decodes, ``training_step`` cuts the views), else None.

    A view without a device twin (e.g. ``sam``) keeps the whole run on the PIL path, with a
    warning: ``views_on=auto`` resolves to ``device`` on CUDA, where such a view stays valid."""
    if ctx.rt.views_on != "device":
        return None
    missing = [f"{k}={getattr(v, 'name', v)}" for k, v in views.items() if not has_device_twin(v)]
    if missing:
        log.warning("CoFT: view(s) %s have no device path; this training makes its views with PIL "
                    "in the loader (--views-on cpu)", ", ".join(missing))
        return None
    return {name: device_view(v, ctx.backbone) for name, v in views.items()}


def _view_dataset(train, idx, views, seed, dviews: dict | None = None):
    """Epoch -> the training data set of ``idx``: PIL views, or decoded images + the device
    views' parameters when ``dviews`` (the step makes the views, :func:`materialize`)."""
    sub = train.subset(idx)
    if dviews is not None:
        return lambda epoch: DecodedDataset(sub, dviews, seed=seed, epoch=epoch)
    return lambda epoch: ViewDataset(sub, views, seed=seed, epoch=epoch)


def _prefixed(rows, prefix: str) -> list[dict]:
    return [{"stage": prefix, **r} for r in rows]


def _everything(n: int) -> torch.Tensor:
    return torch.ones(n, dtype=torch.bool)


@dataclass
class Start:
    """What the rounds start from: zero-shot pseudo-labels and the class texts.

    scale: the cosine-logit scale. texts: the zero-shot texts (``text_source``).
    text_embeds: ``(C, d)`` L2-normalised mean text embeddings. prompt_classes: what fills the
    class slot of the learnable prompts. pseudo, conf: ``(N,)`` zero-shot argmax and its
    probability. truth: ``(N,)`` train labels for monitoring only (None without labels).
    cls_norm: mean norm of the unnormalised image embedding (scales a zero-shot [CLS] head).
    """

    scale: float
    texts: dict[str, list[str]]
    text_embeds: torch.Tensor
    prompt_classes: list[str]
    pseudo: torch.Tensor
    conf: torch.Tensor
    truth: torch.Tensor | None
    cls_norm: float


def zero_shot_start(ctx: FitContext, cfg: CoFTConfig) -> Start:
    """Zero-shot pseudo-labels [O: CoFT's starting labels; P: LLM texts for CoFT+]."""
    bb, rt, train = ctx.backbone, ctx.rt, ctx.train
    scale = float(cfg.logit_scale or bb.logit_scale)
    truth = train.labels.clone() if getattr(train, "has_labels", False) else None  # monitoring only
    texts = ctx.label_texts if cfg.text_source == "label_texts" else ctx.texts
    text_embeds = F.normalize(encode_texts(bb, texts).mean_embeddings().float(), dim=-1).to(bb.device)
    prompt_classes = list(ctx.classnames)
    if cfg.prompt_class_text == "text":
        prompt_classes = [texts[c][0].rstrip(". ") for c in ctx.classnames]
    base = _features(bb, train, rt, tokens=cfg.head_feature == "cls", cache=True)
    zs_logits = scale * base.embeds[:, 0].to(bb.device) @ text_embeds.T
    probs = zs_logits.softmax(dim=1).cpu()
    conf, pseudo = probs.max(dim=1)
    cls_norm = 1.0
    if base.cls is not None:
        proj = _visual_projection(bb).detach().cpu().float()
        cls_norm = float((base.cls[:, 0].float() @ proj).norm(dim=1).mean().clamp_min(1e-6))
    return Start(scale, texts, text_embeds, prompt_classes, pseudo, conf, truth, cls_norm)


def phase1_selection(cfg: CoFTConfig, conf: torch.Tensor, pseudo: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``(N,)`` bool: phase 1's "high-confidence samples" [P]/[O] (``phase1_select``)."""
    if cfg.phase1_select == "all":
        return _everything(len(pseudo))
    if cfg.phase1_select == "top_k":
        return per_class_top(conf, pseudo, n_classes, k=cfg.phase1_top_k)
    return per_class_top(conf, pseudo, n_classes, frac=cfg.phase1_top_frac)


def class_texts(start: Start, classnames: list[str]) -> list[str]:
    """The first zero-shot text of each class (the LLM description with ``text_source=texts``)."""
    return [start.texts[c][0].rstrip(". ") for c in classnames]


@dataclass
class RoundResult:
    """One round's outcome: its phase-1 model, the collaboration, the next round's labels."""

    phase1: Phase1
    collab: Collaboration
    info: dict
    history: list[dict]
    pseudo: torch.Tensor
    conf: torch.Tensor


def run_round(ctx: FitContext, cfg: CoFTConfig, start: Start, pseudo: torch.Tensor, conf: torch.Tensor,
              r: int, views: dict, vision_bb=None) -> RoundResult:
    """Round ``r`` (0-based): phase 1 on the selected samples, then the collaboration over the
    whole train set, and the next round's pseudo-labels and confidences [O]. ``vision_bb``: the
    frozen copy of the image tower for ``vision_model=separate``."""
    bb, rt, train = ctx.backbone, ctx.rt, ctx.train
    C, N, truth = len(ctx.classnames), len(train), start.truth
    rdir = Path(ctx.out_dir) / (f"round{r + 1}" if cfg.rounds > 1 else ".")
    sel = phase1_selection(cfg, conf, pseudo, C)
    sel_idx = sel.nonzero().squeeze(1)
    rinfo = {"round": r + 1, "pseudo": selection_stats(_everything(N), pseudo, truth),
             "phase1_selected": selection_stats(sel, pseudo, truth)}
    p1 = Phase1(bb, cfg, start.prompt_classes, pseudo, sel_idx, truth, start.scale, start.text_embeds,
                seed=rt.seed + 1000 * r, n_train=N, cls_norm=start.cls_norm,
                class_texts=class_texts(start, ctx.classnames) if cfg.pos_ctx_init == "class_text" else None,
                vision_backbone=vision_bb)
    p1.device_views = device_views(ctx, views)
    loop = TrainLoop(p1, _view_dataset(train, sel_idx, views, rt.seed + r, p1.device_views), cfg.phase1,
                     rdir / "phase1", seed=rt.seed + r, num_workers=rt.num_workers, progress=rt.progress)
    history = _prefixed(loop.run(resume=ctx.resume), f"round{r + 1}/phase1")
    inf = p1.infer(train, rt)
    collab = collaborate(pseudo, inf["text"], inf["p_yes"], inf["vision"], cfg.collab_require,
                         cfg.collab_relabel, cfg.collab_relabel_gate)
    gate = gather_clean(inf["p_yes"], pseudo) > 0.5
    rinfo.update({
        "text_gate": selection_stats(gate, pseudo, truth),
        "collab": selection_stats(collab.keep, torch.where(collab.keep, collab.labels, pseudo), truth),
        "confirmed": int((collab.code == CONFIRMED).sum()),
        "relabelled": int((collab.code == RELABELLED).sum()),
        "text_side": selection_stats(_everything(N), inf["text"].argmax(1), truth),
        "vision_side": selection_stats(_everything(N), inf["vision"].argmax(1), truth),
    })
    mon = ctx.monitor
    if cfg.monitor_eval and mon is not None and getattr(mon, "has_labels", False):
        from labelless.eval.metrics import classification_metrics  # only when monitoring

        mi = p1.infer(mon, rt)
        rinfo["monitor"] = {  # the run's metric (top-1 %, unknown labels ignored)
            f"{side}_side_top1": classification_metrics(mi[side], mon.labels, C).top1
            for side in ("text", "vision")}
        history.append({"stage": f"round{r + 1}/phase1_monitor", **rinfo["monitor"]})
    # next round [O]: collaborative labels where kept, the two models' ensemble elsewhere
    ens = (inf["text"].softmax(1) + inf["vision"].softmax(1)) / 2
    e_conf, e_lab = ens.max(dim=1)
    relabel = torch.where(collab.keep, collab.labels, e_lab)
    flips = int((relabel != pseudo).sum())  # label-free churn of the round's pseudo-labels
    history.append({"stage": f"round{r + 1}/collaboration", **{f"collab_{k}": v for k, v in rinfo["collab"].items()},
                    "collab_confirmed": rinfo["confirmed"], "collab_relabelled": rinfo["relabelled"],
                    "pl_flips": flips, "pl_flip_rate": 100.0 * flips / max(N, 1)})
    next_conf = torch.where(collab.keep, torch.ones_like(e_conf) + e_conf, e_conf)
    p1.release()
    return RoundResult(p1, collab, rinfo, history, relabel, next_conf)


@dataclass
class Phase2Result:
    """Phase 2's trained head, the fine-tuned backbone parameters and the training rows."""

    head: torch.nn.Linear
    tuned: dict[str, torch.Tensor]
    history: list[dict]
    n_samples: int


def run_phase2(ctx: FitContext, cfg: CoFTConfig, start: Start, labels: torch.Tensor, keep: torch.Tensor,
               views: dict) -> Phase2Result:
    """Phase 2: full fine-tuning on the collaboratively filtered labels [P]/[D] (``keep``)."""
    bb, rt, train = ctx.backbone, ctx.rt, ctx.train
    keep_idx = keep.nonzero().squeeze(1)
    names = bb.resolve_params(list(cfg.phase2_params))
    own = dict(bb.model.named_parameters())
    for n in names:
        own[n].requires_grad_(True)
    g = torch.Generator().manual_seed(rt.seed + 99)
    head = make_head(bb, start.text_embeds, cfg.head_feature, cfg.head_init, start.scale, g, cls_norm=start.cls_norm)
    p2 = Phase2(bb, cfg, labels, keep_idx, names, head, seed=rt.seed)
    if rt.progress:
        log.info(trainable_report(bb.model, "phase 2 backbone parameters"))
    views2 = dict(views)
    if cfg.moco:
        views2["key"] = build_view(cfg.moco_view, bb)
    p2.device_views = device_views(ctx, views2)
    loop = TrainLoop(p2, _view_dataset(train, keep_idx, views2, rt.seed + 500, p2.device_views), cfg.phase2,
                     Path(ctx.out_dir) / "phase2", seed=rt.seed + 500, num_workers=rt.num_workers,
                     progress=rt.progress)
    history = _prefixed(loop.run(resume=ctx.resume), "phase2")
    for n in names:
        own[n].requires_grad_(False)
    tuned = {n: own[n].detach().clone() for n in names}
    return Phase2Result(head, tuned, history, int(keep_idx.numel()))


class CoFTBase(Method):
    Config = CoFTConfig
    trains = True
    # clean-sample means, complementary labels and the MoCo queue follow the global batch
    ddp_exact = True

    def fit(self, ctx: FitContext) -> FitResult:
        cfg: CoFTConfig = self.cfg
        bb = ctx.backbone
        N = len(ctx.train)
        for p in bb.model.parameters():
            p.requires_grad_(False)
        start = zero_shot_start(ctx, cfg)
        history: list[dict] = []
        info: dict = {"zeroshot": selection_stats(_everything(N), start.pseudo, start.truth), "rounds": []}

        views = {"img": build_view(cfg.train_view, bb)}
        pseudo, conf, collab = start.pseudo, start.conf, None
        self.phase1_models: list[Phase1] = []  # kept for inspection (text/vision sides of each round)
        vision_bb = vision_copy(bb) if cfg.vision_model == "separate" else None
        for r in range(cfg.rounds):
            rr = run_round(ctx, cfg, start, pseudo, conf, r, views, vision_bb)
            history += rr.history
            info["rounds"].append(rr.info)
            pseudo, conf, collab = rr.pseudo, rr.conf, rr.collab
            self.phase1_models.append(rr.phase1)

        labels2, keep = collab.labels, collab.keep
        if not bool(keep.any()):
            # [O] a degenerate collaboration (e.g. an untrained backbone) must not stop the run:
            # fall back to the last round's pseudo-labels, recorded in info.
            warnings.warn("CoFT: the collaboration kept no sample; phase 2 uses all pseudo-labels", stacklevel=2)
            labels2, keep = pseudo, _everything(N)
            info["phase2_fallback"] = "all pseudo-labels"
        p2 = run_phase2(ctx, cfg, start, labels2, keep, views)
        history += p2.history
        clf = CoFTClassifier(ctx.classnames, bb.spec, {**to_dict(cfg), "method": self.name},
                             p2.head.weight.detach().clone(), p2.head.bias.detach().clone())
        info["phase2_samples"] = p2.n_samples
        return FitResult(classifier=clf, tuned=p2.tuned, history=history, info={"coft": info})


@METHODS.register("coft")
class CoFT(CoFTBase):
    """CoFT: dual-prompt cleanliness + cross-modal collaboration, PEFT then full fine-tuning."""

    Config = CoFTConfig
    name = "coft"


@METHODS.register("coft+")
class CoFTPlus(CoFTBase):
    """CoFT+: CoFT with iterative rounds, momentum contrast and LLM-description pseudo-labels."""

    Config = CoFTPlusConfig
    name = "coft+"
