"""FAIR: hand-computed scores, parameter selection, artifact round-trip, resume, ablation switches."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import labelless.methods.fair as fair_mod
from labelless.backbones import load_backbone
from labelless.data import build_dataset
from labelless.errors import ConfigError
from labelless.methods.base import FitContext, Runtime, load_classifier
from labelless.methods.fair import ABLATIONS, FairConfig, build_fair
from labelless.registry import CLASSIFIERS, METHODS
from labelless.runner import RunConfig, run
from labelless.scoring.fair import (
    fair_crop_weights,
    fairness_loss,
    learned_alignment_score,
    pseudo_label_weight,
    select_topk,
    weighted_cross_entropy,
)

TINY = "openclip:labelless-tiny:random"


# ---- pure functions, hand-computed ---------------------------------------------------------

def test_crop_weights_are_cosines_clamped_without_softmax():
    g = torch.tensor([[1.0, 0.0]])  # (B=1, w=2)
    crops = torch.tensor([[[2.0, 0.0], [1.0, 1.0], [0.0, 3.0], [-1.0, 0.0]]])  # (1, 4, 2)
    w = fair_crop_weights(crops, g)  # cos = 1, 1/sqrt2, 0, -1 -> clamp
    torch.testing.assert_close(w, torch.tensor([[1.0, 1 / math.sqrt(2), 0.0, 0.0]]))
    torch.testing.assert_close(fair_crop_weights(crops, g, "keep")[0, 3], torch.tensor(-1.0))
    torch.testing.assert_close(fair_crop_weights(crops, g, "shift")[0], torch.tensor([1.0, (1 + 2**-0.5) / 2, 0.5, 0.0]))


def test_topk_and_las_match_hand_computation():
    # two crops kept out of three; anchors are the axes of R^2
    w = torch.tensor([[0.9, 0.1, 0.6]])
    feats = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    kw, kf = select_topk(w, feats, 2)
    torch.testing.assert_close(kw, torch.tensor([[0.9, 0.6]]))
    torch.testing.assert_close(kf, torch.tensor([[[1.0, 0.0], [1.0, 1.0]]]))
    anchors = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # normalised inside
    las = learned_alignment_score(kf, kw, anchors, eps=0.0)
    s = 2**-0.5
    expected = torch.tensor([[(0.9 * 1 + 0.6 * s) / 1.5, (0.9 * 0 + 0.6 * s) / 1.5]])
    torch.testing.assert_close(las, expected)
    # all-zero weights fall back to the plain mean of the kept crops instead of 0/0
    las0 = learned_alignment_score(kf, torch.zeros(1, 2), anchors)
    torch.testing.assert_close(las0, torch.tensor([[(1 + s) / 2, s / 2]]))
    assert select_topk(w, feats, None)[0] is w


def test_pseudo_label_weight_hand_computed():
    scores = torch.tensor([[0.5, 0.3, 0.1], [0.2, 0.6, 0.5]])  # margins 0.2, 0.1
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    # row 0: top-2 = classes 0, 1 -> cos 0 -> a = 1; row 1: classes 1, 2 -> cos 0.8 -> a = 0.2
    w, parts = pseudo_label_weight(scores, anchors, normalize=False)
    torch.testing.assert_close(parts["margin"], torch.tensor([0.2, 0.1]))
    torch.testing.assert_close(parts["ambiguity"], torch.tensor([1.0, 0.2]))
    torch.testing.assert_close(w, torch.tensor([0.2, 0.02]))
    wn, _ = pseudo_label_weight(scores, anchors)
    torch.testing.assert_close(wn, torch.tensor([0.2, 0.02]) / 0.11)
    torch.testing.assert_close(wn.mean(), torch.tensor(1.0))
    wm, _ = pseudo_label_weight(scores, anchors, ambiguity=False)
    torch.testing.assert_close(wm, torch.tensor([0.2, 0.1]) / 0.15)
    wa, _ = pseudo_label_weight(scores, anchors, margin=False)
    torch.testing.assert_close(wa, torch.tensor([1.0, 0.2]) / 0.6)
    off, _ = pseudo_label_weight(scores, anchors, margin=False, ambiguity=False)
    torch.testing.assert_close(off, torch.ones(2))
    tie, _ = pseudo_label_weight(torch.tensor([[0.4, 0.4, 0.0]]), anchors)
    torch.testing.assert_close(tie, torch.ones(1))  # all-zero raw weights -> 1


def test_losses_hand_computed():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0])
    ce = -torch.log_softmax(logits, 1)[torch.arange(2), y]
    torch.testing.assert_close(weighted_cross_entropy(logits, y, torch.tensor([1.5, 0.5])), (1.5 * ce[0] + 0.5 * ce[1]) / 2)
    probs = torch.tensor([[0.9, 0.1], [0.5, 0.5]])
    loss, p_bar = fairness_loss(probs)
    torch.testing.assert_close(p_bar, torch.tensor([0.7, 0.3]))
    torch.testing.assert_close(loss, -(math.log(0.7) + math.log(0.3)) / 2 * torch.ones(()))
    loss2, p2 = fairness_loss(probs, running=torch.tensor([0.5, 0.5]), momentum=0.5)
    torch.testing.assert_close(p2, torch.tensor([0.6, 0.4]))
    torch.testing.assert_close(loss2, -(math.log(0.6) + math.log(0.4)) / 2 / 0.5 * torch.ones(()))


def test_fairness_running_form_matches_must():
    """MUST (engine_self_training.py, m = 0.5): the first step of an epoch uses the batch mean
    and already divides by 0.5; momentum 0 (the batch form) is unscaled and ignores ``running``."""
    probs = torch.tensor([[0.9, 0.1], [0.5, 0.5]])
    first, p1 = fairness_loss(probs, running=None, momentum=0.5)
    torch.testing.assert_close(p1, torch.tensor([0.7, 0.3]))
    torch.testing.assert_close(first, -(math.log(0.7) + math.log(0.3)) / 2 / 0.5 * torch.ones(()))
    batch_form, p0 = fairness_loss(probs, running=torch.tensor([0.5, 0.5]), momentum=0.0)
    torch.testing.assert_close(p0, torch.tensor([0.7, 0.3]))
    torch.testing.assert_close(batch_form, -(math.log(0.7) + math.log(0.3)) / 2 * torch.ones(()))


# ---- the method on a tiny model --------------------------------------------------------------

def _ctx(root: Path, out: Path, backbone=None, resume=False) -> FitContext:
    train = build_dataset(f"imagefolder:root={root}")
    names = list(train.classnames)
    return FitContext(
        backbone=backbone or load_backbone(TINY), train=train, classnames=names,
        texts={c: [f"a {c} thing", f"something {c}"] for c in names},
        label_texts={c: [f"a photo of a {c}."] for c in names},
        rt=Runtime(device="cpu", progress=False, seed=3), out_dir=out, resume=resume,
    )


def _cfg(**kw) -> FairConfig:
    optim = {"epochs": 2, "batch_size": 6, "lr": 1e-2, "min_lr": 0.0, "checkpoint_every": 1}
    optim.update(kw.pop("optim", {}))
    from labelless.config import from_dict

    return from_dict(FairConfig, {"n_crops": 4, "k": 2, "optim": optim, **kw})


def _spy_encode_image(monkeypatch, backbone) -> list[tuple[int, bool]]:
    """Record ``(images in the batch, grad enabled)`` for every ``backbone.encode_image`` call."""
    calls = []
    real = backbone.encode_image

    def spy(images, tokens=False):
        calls.append((images.shape[0], torch.is_grad_enabled()))
        return real(images, tokens=tokens)

    monkeypatch.setattr(backbone, "encode_image", spy)
    return calls


def test_only_visual_layernorms_and_anchors_change(colour_folder, tmp_path):
    ctx = _ctx(colour_folder, tmp_path / "run")
    before = {n: p.detach().clone() for n, p in ctx.backbone.model.named_parameters()}
    trainer, loop = build_fair(ctx, _cfg(optim={"epochs": 1}))
    a0 = trainer.anchors.detach().clone()
    history = loop.run()
    assert all(math.isfinite(v) for v in history[0].values() if isinstance(v, float))
    for key in ("loss", "loss_st", "loss_fair", "w_std", "pl_acc", "pl_classes_used", "lr"):
        assert key in history[0]
    ln = set(ctx.backbone.resolve_params(["visual_ln"]))
    changed = {n for n, p in ctx.backbone.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= ln, changed - ln
    assert not torch.equal(trainer.anchors.detach(), a0)
    assert set(trainer.tuner.finalize()) == ln
    assert (tmp_path / "run" / "train_log.csv").exists() and (tmp_path / "run" / "pseudo_labels.csv").exists()


def test_run_artifact_roundtrips_to_identical_predictions(colour_folder, tmp_path):
    out = tmp_path / "run"
    res = run(RunConfig(
        method="fair", model=TINY, data=f"imagefolder:root={colour_folder}", texts="names", out=str(out),
        params={"n_crops": 4, "k": 2, "optim": {"epochs": 1, "batch_size": 9, "lr": 1e-2}},
        runtime=Runtime(device="cpu", progress=False, cache_dir=str(tmp_path / "cache")),
    ))
    clf = res["fit"].classifier
    assert clf.kind == "prototype" and CLASSIFIERS.get("prototype") is type(clf)
    ds = build_dataset(f"imagefolder:root={colour_folder}")
    rt = Runtime(device="cpu", progress=False, cache_dir=str(tmp_path / "cache"))
    clf2, bb2 = load_classifier(out / "classifier")
    logits2 = clf2.predict(bb2, ds, rt)
    # the fitted classifier on a fresh base backbone + tuned params == the loaded artifact
    bb = load_backbone(TINY)
    with torch.no_grad():
        own = dict(bb.model.named_parameters())
        for n, t in res["fit"].tuned.items():
            own[n].copy_(t)
    torch.testing.assert_close(clf.predict(bb, ds, rt), logits2, rtol=0, atol=0)
    torch.testing.assert_close(clf2.prototypes, F.normalize(clf.prototypes, dim=-1))
    # the base backbone (without the tuned LayerNorms) predicts differently: they are applied
    assert not torch.equal(clf2.predict(load_backbone(TINY), ds, rt), logits2)
    assert (out / "classifier" / "backbone.safetensors").exists()
    for png in ("fair_losses.png", "fair_weights.png", "fair_lr.png", "fair_pl_acc.png"):
        assert (out / png).exists(), png


@pytest.mark.parametrize("crash_at", [3, 4], ids=["epoch-boundary", "mid-epoch"])
def test_resume_after_interruption_equals_uninterrupted(colour_folder, tmp_path, crash_at):
    """Killed at global step 3 (= after epoch 1) or 4 (inside epoch 2), resumed in a new loop."""
    cfg = _cfg()
    # uninterrupted: 2 epochs of 3 steps
    trainer_a, loop_a = build_fair(_ctx(colour_folder, tmp_path / "a"), cfg)
    loop_a.run()

    # interrupted, then a new loop (as a new process would) resumes from the checkpoint
    trainer_b, loop_b = build_fair(_ctx(colour_folder, tmp_path / "b"), cfg)
    real_step = trainer_b.training_step

    def crashing(batch, step):
        if step == crash_at:
            raise KeyboardInterrupt
        return real_step(batch, step)

    trainer_b.training_step = crashing
    with pytest.raises(KeyboardInterrupt):
        loop_b.run()
    trainer_c, loop_c = build_fair(_ctx(colour_folder, tmp_path / "b", resume=True), cfg)
    loop_c.run(resume=True)

    pa = dict(trainer_a.named_trainable())
    pc = dict(trainer_c.named_trainable())
    assert set(pa) == set(pc)
    for n in pa:
        assert torch.equal(pa[n].detach(), pc[n].detach()), n
    assert (tmp_path / "a" / "pseudo_labels.csv").read_text() == (tmp_path / "b" / "pseudo_labels.csv").read_text()


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_every_ablation_trains_one_step(colour_folder, tmp_path, ablation):
    ctx = _ctx(colour_folder, tmp_path / ablation)
    extra = {"pl_texts": "names"} if ablation == "coder_pl" else {}
    cfg = _cfg(ablation=ablation, optim={"epochs": 1, "batch_size": 18}, **extra)
    for key, value in ABLATIONS[ablation].items():
        assert getattr(cfg, key) == value
    trainer, loop = build_fair(ctx, cfg)
    hist = loop.run()
    assert math.isfinite(hist[0]["loss"])
    if cfg.pl_view == "global":
        assert "crops" not in loop.dataset_for_epoch(0).views


@pytest.mark.parametrize("crop_grad", [True, False], ids=["default", "strong-only"])
def test_las_pseudo_labels_use_one_forward_and_no_grad(colour_folder, tmp_path, monkeypatch, crop_grad):
    ctx = _ctx(colour_folder, tmp_path / "r")
    trainer, loop = build_fair(ctx, _cfg(crop_grad=crop_grad))
    batch = next(iter(torch.utils.data.DataLoader(loop.dataset_for_epoch(0), batch_size=5)))
    calls = _spy_encode_image(monkeypatch, ctx.backbone)
    out = trainer.training_step(batch, 0)
    # one no-grad forward with B*(1+N) images, then one grad forward with the B strong views
    # (and, with crop_grad, the B*k kept crops in the same forward)
    assert calls == [(5 * (1 + 4), False), (5 * (1 + 2) if crop_grad else 5, True)]
    out["loss"].backward()
    assert trainer.anchors.grad is not None


def test_config_errors():
    with pytest.raises(ConfigError, match="unknown FAIR ablation"):
        FairConfig(ablation="nope")
    with pytest.raises(ConfigError, match="k"):
        FairConfig(n_crops=4, k=8)
    with pytest.raises(ConfigError, match="crop_weighting"):
        FairConfig(crop_weighting="softmax")
    assert METHODS.get("fair") is fair_mod.Fair
    assert METHODS.describe("fair").startswith("FAIR")


def test_lora_tuner_trains_adapters_and_merges(colour_folder, tmp_path):
    ctx = _ctx(colour_folder, tmp_path / "lora")
    base = {n: p.detach().clone() for n, p in ctx.backbone.model.named_parameters()}
    trainer, loop = build_fair(ctx, _cfg(tuner="lora", tuner_options={"r": 2}, optim={"epochs": 1, "batch_size": 9}))
    names = [n for n, _ in trainer.named_trainable()]
    assert "anchors" in names and all("lora_" in n for n in names if n != "anchors")
    loop.run()
    tuned = trainer.tuner.finalize()  # merged into the base weights
    assert tuned and all("lora" not in n for n in tuned)
    after = dict(ctx.backbone.model.named_parameters())
    assert set(after) == set(base)  # LoRA modules are gone after merging
    changed = {n for n in base if not torch.equal(after[n], base[n])}
    assert changed and changed <= set(tuned)
    assert all(".attn." in n or ".mlp." in n for n in changed)


def test_running_fairness_mean_restarts_every_epoch(colour_folder, tmp_path, monkeypatch):
    """With fairness_momentum > 0 the first step of every epoch starts without a running mean."""
    ctx = _ctx(colour_folder, tmp_path / "run")
    trainer, loop = build_fair(ctx, _cfg(fairness_momentum=0.5, optim={"epochs": 2, "batch_size": 9}))
    seen = []
    real = fair_mod.fairness_loss

    def spy(probs, running=None, momentum=0.0):
        seen.append(running is None)
        return real(probs, running, momentum)

    monkeypatch.setattr(fair_mod, "fairness_loss", spy)
    loop.run()
    assert seen == [True, False, True, False]  # 18 images, batch 9: two steps per epoch


def test_precision_setting_and_fp32_pseudo_labels(colour_folder, tmp_path, monkeypatch):
    """FAIR runs in fp32 by default (the paper); with optim.precision=bf16 its encoder forwards
    autocast (exercised on CPU), while LAS scores, argmax, margins and weights stay fp32 even
    inside the loop's bf16 autocast."""
    assert FairConfig().optim.precision == "fp32"
    ctx = _ctx(colour_folder, tmp_path / "r")
    trainer, loop = build_fair(ctx, _cfg(optim={"precision": "bf16", "epochs": 1, "batch_size": 9}))
    assert loop.precision == "bf16"
    batch = next(iter(torch.utils.data.DataLoader(loop.dataset_for_epoch(0), batch_size=5)))
    emb = torch.nn.functional.normalize(torch.randn(5, 5, ctx.backbone.embed_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    cls = torch.randn(5, 5, 16, generator=torch.Generator().manual_seed(1))
    dtypes = []

    def fixed(backbone, views, tokens=False):
        dtypes.append(backbone.encode_image(views.flatten(0, 1)[:1]).embeds.dtype)  # the forward's precision
        return emb, cls

    monkeypatch.setattr(fair_mod, "encode_views", fixed)
    plain = trainer.pseudo_labels(batch["views"])
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as inside the loop's training step
        mixed = trainer.pseudo_labels(batch["views"])
    assert dtypes == [torch.bfloat16, torch.bfloat16]  # the encoder forward honours bf16
    for key in ("scores", "w", "margin", "ambiguity"):
        assert mixed[key].dtype == torch.float32, key
        assert torch.equal(mixed[key], plain[key]), key
    assert torch.equal(mixed["y"], plain["y"])
    monkeypatch.undo()
    hist = loop.run()  # a whole bf16 epoch on CPU
    assert math.isfinite(hist[0]["loss"])


def test_kadaptation_tuner_artifact_predicts_the_same(colour_folder, tmp_path):
    """FAIR with the K-Adaptation tuner: only its factors (and the anchors) train; the saved
    artifact (merged attention weights) predicts what the fitted model predicts."""
    out = tmp_path / "run"
    res = run(RunConfig(
        method="fair", model=TINY, data=f"imagefolder:root={colour_folder}", texts="names", out=str(out),
        params={"n_crops": 4, "k": 2, "tuner": "kadaptation", "tuner_options": {"n": 4, "r": 1},
                "optim": {"epochs": 1, "batch_size": 9, "lr": 1e-2}},
        runtime=Runtime(device="cpu", progress=False, cache_dir=str(tmp_path / "cache")),
    ))
    tuned = res["fit"].tuned
    assert tuned and all(n.endswith(("attn.in_proj_weight", "attn.out_proj.weight")) for n in tuned)
    base = dict(load_backbone(TINY).model.named_parameters())
    assert any(not torch.equal(t, base[n]) for n, t in tuned.items())
    ds = build_dataset(f"imagefolder:root={colour_folder}")
    rt = Runtime(device="cpu", progress=False, cache_dir=str(tmp_path / "cache"))
    clf2, bb2 = load_classifier(out / "classifier")
    logits2 = clf2.predict(bb2, ds, rt)
    bb = load_backbone(TINY)  # a fresh base model + the merged tensors == the loaded artifact
    with torch.no_grad():
        own = dict(bb.model.named_parameters())
        for n, t in tuned.items():
            own[n].copy_(t)
    torch.testing.assert_close(clf2.predict(bb, ds, rt), logits2, rtol=0, atol=0)
    torch.testing.assert_close(res["fit"].classifier.predict(bb, ds, rt), logits2, rtol=1e-6, atol=1e-5)
    assert not torch.equal(clf2.predict(load_backbone(TINY), ds, rt), logits2)


def _strong_only_step(trainer, batch):
    """The step without crop gradients, composed from the pure functions: the strong view alone
    enters the student loss."""
    pl = trainer.pseudo_labels(batch["views"])
    f = trainer.backbone.encode_image(batch["views"]["strong"][:, 0]).embeds
    logits = F.normalize(f, dim=-1) @ F.normalize(trainer.anchors, dim=-1).t() / trainer.cfg.tau
    loss_st = weighted_cross_entropy(logits, pl["y"], pl["w"])
    return pl, logits, loss_st + fairness_loss(logits.softmax(dim=-1))[0]


@pytest.mark.parametrize("crop_grad", [False, True], ids=["strong-only", "crop-grad"])
def test_crop_grad_switch(colour_folder, tmp_path, monkeypatch, crop_grad):
    """crop_grad=False: the crops only pseudo-label (no gradient reaches them, the step
    is the strong-view step). crop_grad=True: the top-k kept crops enter the student loss with
    gradient, each with its image's pseudo-label and weight; the other crops get none."""
    assert FairConfig().crop_grad is True  # the default, chosen on the dev suite
    ctx = _ctx(colour_folder, tmp_path / "r")
    trainer, loop = build_fair(ctx, _cfg(crop_grad=crop_grad))  # N = 4, k = 2
    batch = next(iter(torch.utils.data.DataLoader(loop.dataset_for_epoch(0), batch_size=5)))
    crops = batch["views"]["crops"].requires_grad_(True)  # (5, 4, 3, S, S)
    calls = _spy_encode_image(monkeypatch, ctx.backbone)
    out = trainer.training_step(batch, 0)
    out["loss"].backward()
    monkeypatch.undo()
    pl, strong_logits, strong_only = _strong_only_step(trainer, batch)
    kept = pl["kept"]  # (5, 2)
    if not crop_grad:
        assert calls == [(5 * 5, False), (5, True)]
        assert crops.grad is None
        assert torch.equal(out["loss"].detach(), strong_only.detach())
        return
    assert calls == [(5 * 5, False), (5 * (1 + 2), True)]
    got = crops.grad.flatten(2).abs().sum(-1) > 0  # (5, 4): which crops received gradient
    want = torch.zeros(5, 4, dtype=torch.bool).scatter_(1, kept, True)
    assert torch.equal(got, want)
    # L_st = mean over the 5 strong views and 10 kept crops, each with its image's label and weight
    sel = batch["views"]["crops"].detach()[torch.arange(5).unsqueeze(1), kept].flatten(0, 1)  # (10, ...)
    fc = ctx.backbone.encode_image(sel).embeds
    crop_logits = F.normalize(fc, dim=-1) @ F.normalize(trainer.anchors, dim=-1).t() / trainer.cfg.tau
    ce = F.cross_entropy(torch.cat([strong_logits, crop_logits]),
                         torch.cat([pl["y"], pl["y"].repeat_interleave(2)]), reduction="none")
    w = torch.cat([pl["w"], pl["w"].repeat_interleave(2)])
    torch.testing.assert_close(out["loss_st"], (w * ce).mean(), rtol=1e-5, atol=1e-5)


def test_crop_grad_needs_crops():
    with pytest.raises(ConfigError, match="crop_grad"):
        FairConfig(crop_grad=True, pl_view="global")
    for preset in ("fair_g", "fair_g_las", "fair_g_las_plw"):  # no crops: the presets switch it off
        assert FairConfig(ablation=preset).crop_grad is False
    assert FairConfig(crop_grad=True, crop_select=False).crop_grad


def test_coder_pl_preset_pseudo_labels_from_pl_texts(colour_folder, tmp_path):
    """ablation=coder_pl (suppl. Tab. 7): the fixed pseudo-labeller is built from pl_texts
    (CODER's texts), scored against the global view; the anchors still start from --texts."""
    from labelless.text import build_texts
    from labelless.text.encode import encode_texts

    with pytest.raises(ConfigError, match="pl_texts"):
        FairConfig(ablation="coder_pl")
    with pytest.raises(ConfigError, match="pl_texts"):
        FairConfig(pl_texts="names")  # the anchors pseudo-label: pl_texts would be ignored
    ctx = _ctx(colour_folder, tmp_path / "r")
    coder = {c: [f"a photo of {c}", f"{c} which has a flat colour", f"Because of hue, {c} is different."]
             for c in ctx.classnames}
    spec_file = tmp_path / "coder.json"
    spec_file.write_text(__import__("json").dumps(coder))
    cfg = _cfg(ablation="coder_pl", pl_texts=f"descriptions:path={spec_file}")
    assert (cfg.pl_view, cfg.pl_classifier, cfg.weak_view) == ("global", "descriptions", "center")
    trainer, loop = build_fair(ctx, cfg)
    with torch.no_grad():
        want = encode_texts(ctx.backbone, build_texts(f"descriptions:path={spec_file}", ctx.classnames))
        own = encode_texts(ctx.backbone, ctx.texts)
    torch.testing.assert_close(trainer.fixed_classes, F.normalize(want.mean_embeddings(), dim=-1))
    torch.testing.assert_close(trainer.anchors.detach(), F.normalize(own.mean_embeddings(), dim=-1))
    assert not torch.allclose(trainer.fixed_classes, trainer.anchors.detach())
    assert "crops" not in loop.dataset_for_epoch(0).views
    assert math.isfinite(loop.run()[0]["loss"])
