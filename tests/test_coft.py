"""CoFT / CoFT+: pure functions against hand-computed cases, gradient routing per phase,
artifact and checkpoint round-trips (tiny random model, CPU)."""

from __future__ import annotations

import math

import pytest
import torch

from labelless.backbones import load_backbone
from labelless.config import from_dict
from labelless.data import build_dataset
from labelless.errors import ConfigError
from labelless.methods.base import FitContext, Runtime, load_classifier
from labelless.methods.coft import (
    CoFT,
    CoFTConfig,
    CoFTPlus,
    CoFTPlusConfig,
    Phase1,
    Phase2,
    make_head,
)
from labelless.registry import CLASSIFIERS, METHODS
from labelless.scoring.coft import (
    CONFIRMED,
    DROPPED,
    RELABELLED,
    class_balance_weights,
    clean_probability,
    collaborate,
    complementary_labels,
    deft_losses,
    moco_loss,
    per_class_top,
    selection_stats,
)

TINY = "openclip:labelless-tiny:random"


# ----------------------------------------------------------------------------- pure functions


def test_clean_probability_hand_computed():
    s_pos = torch.tensor([[2.0, 0.0]])
    s_neg = torch.tensor([[0.0, 1.0]])
    p = clean_probability(s_pos, s_neg)
    # softmax([2, 0]) = e^2/(e^2+1); softmax([0, 1]) = 1/(1+e)
    torch.testing.assert_close(p, torch.tensor([[math.e**2 / (math.e**2 + 1), 1 / (1 + math.e)]]))
    # DeFT detaches s+: only the negative prompt's logits get a gradient
    sp, sn = s_pos.clone().requires_grad_(), s_neg.clone().requires_grad_()
    clean_probability(sp, sn).sum().backward()
    assert sp.grad is None and sn.grad.abs().sum() > 0


def test_deft_losses_hand_computed():
    s_pos = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    s_neg = torch.tensor([[1.0, 1.0, 1.0], [1.0, 3.0, 1.0]])
    y = torch.tensor([0, 1])
    comp = torch.tensor([2, 0])
    sig = torch.sigmoid
    # sample 0: p_yes[0] = sig(2) > .5 clean; sample 1: p_yes[1] = sig(-1) < .5 unclean
    out = deft_losses(s_pos, s_neg, y, comp, warmup=False)
    assert out["clean"].tolist() == [True, False]
    ce0 = -torch.log_softmax(s_pos[0], 0)[0]
    torch.testing.assert_close(out["cls"], ce0)
    # y' = y for the clean sample, argmax s+ (= 1 here, equal to y) for the unclean one
    neg0 = -torch.log(1 - sig(torch.tensor(0.0 - 1.0))) - torch.log(sig(torch.tensor(2.0)))
    neg1 = -torch.log(1 - sig(torch.tensor(0.0 - 1.0))) - torch.log(sig(torch.tensor(-1.0)))
    torch.testing.assert_close(out["neg"], (neg0 + neg1) / 2, atol=1e-6, rtol=1e-6)
    warm = deft_losses(s_pos, s_neg, y, comp, warmup=True)
    assert warm["clean"].all()
    ce1 = -torch.log_softmax(s_pos[1], 0)[1]
    torch.testing.assert_close(warm["cls"], (ce0 + ce1) / 2)


def test_deft_unclean_sample_uses_argmax_label():
    s_pos = torch.tensor([[0.0, 4.0]])
    s_neg = torch.tensor([[5.0, 0.0]])  # label 0 unclean; argmax s+ = 1
    out = deft_losses(s_pos, s_neg, torch.tensor([0]), torch.tensor([1]), warmup=False)
    expect = -torch.log(1 - torch.sigmoid(torch.tensor(4.0))) - torch.log(torch.sigmoid(torch.tensor(4.0)))
    torch.testing.assert_close(out["neg"], expect)
    assert float(out["cls"]) == 0.0  # no clean sample in the batch


def test_deft_negative_log_clamp_saturates():
    """neg_log=clamp (DeFT): log(max(p, 1e-5)), constant with zero gradient below 1e-5;
    eps (ours, the default): log(p + 1e-8), still moving. Equal where p is far from 0."""
    s_pos = torch.tensor([[0.0, 30.0]])  # y = 1 clean with p_yes = sigmoid(30): 1 - p ~ 1e-13
    s_neg = torch.tensor([[0.0, 0.0]], requires_grad=True)
    y, comp = torch.tensor([1]), torch.tensor([0])
    p_yes = torch.sigmoid(s_pos.detach() - s_neg.detach())[0]  # (C,)
    clamp = deft_losses(s_pos, s_neg, y, comp, warmup=False, neg_log="clamp")
    eps = deft_losses(s_pos, s_neg, y, comp, warmup=False, neg_log="eps")
    expect_clamp = -torch.log(1 - p_yes[0]) - torch.log(torch.tensor(1.0 - 1e-13).clamp_min(1e-5))
    torch.testing.assert_close(clamp["neg"].detach(), expect_clamp)
    torch.testing.assert_close(eps["neg"].detach(), -torch.log(1 - p_yes[0] + 1e-8) - torch.log(p_yes[1] + 1e-8))
    # make the complementary class's p_yes ~ 1: 1 - p below the clamp floor
    s_neg2 = torch.tensor([[-40.0, 0.0]], requires_grad=True)
    c2 = deft_losses(s_pos, s_neg2, y, comp, warmup=False, neg_log="clamp")
    torch.testing.assert_close(c2["neg"].detach(), -math.log(1e-5) - torch.log(torch.sigmoid(torch.tensor(30.0))))
    c2["neg"].backward()
    assert s_neg2.grad[0, 0] == 0  # saturated: no gradient through the clamped term
    e2 = deft_losses(s_pos, s_neg2.detach().requires_grad_(), y, comp, warmup=False)
    assert e2["neg"] > c2["neg"] and torch.isfinite(e2["neg"])
    with pytest.raises(ValueError, match="neg_log"):
        deft_losses(s_pos, s_neg, y, comp, warmup=False, neg_log="softplus")


def test_complementary_labels_differ():
    y = torch.arange(5).repeat(20)
    comp = complementary_labels(y, 5, torch.Generator().manual_seed(0))
    assert (comp != y).all() and comp.min() >= 0 and comp.max() < 5
    with pytest.raises(ValueError):
        complementary_labels(torch.tensor([0]), 1)


def test_collaboration_rule_hand_computed():
    pseudo = torch.tensor([0, 0, 1, 2, 1])
    # text-side logits and cleanliness, vision-side logits, per sample:
    # 0: gate clean(0), vision says 0          -> CONFIRMED 0
    # 1: gate clean(0), vision says 1          -> 'both': not confirmed; models disagree -> DROPPED
    # 2: gate unclean(1); text & vision say 2, gate clean(2) -> RELABELLED 2
    # 3: gate unclean(2); text & vision say 0, gate unclean(0) -> DROPPED (relabel gated)
    # 4: gate unclean(1), vision says 1        -> 'either': CONFIRMED, 'both': dropped
    text = torch.tensor([[5., 0, 0], [5, 0, 0], [0, 0, 5], [5, 0, 0], [0, 0, 5]])
    p_yes = torch.tensor([[.9, .1, .1], [.8, .1, .1], [.1, .2, .7], [.3, .1, .2], [.1, .4, .9]])
    vision = torch.tensor([[3., 0, 0], [0, 3, 0], [0, 0, 3], [3, 0, 0], [0, 3, 0]])
    both = collaborate(pseudo, text, p_yes, vision, require="both")
    assert both.code.tolist() == [CONFIRMED, DROPPED, RELABELLED, DROPPED, DROPPED]
    assert both.labels.tolist() == [0, -1, 2, -1, -1]
    assert both.keep.tolist() == [True, False, True, False, False]
    either = collaborate(pseudo, text, p_yes, vision, require="either")
    assert either.code.tolist() == [CONFIRMED, CONFIRMED, RELABELLED, DROPPED, CONFIRMED]
    assert either.labels.tolist() == [0, 0, 2, -1, 1]
    ungated = collaborate(pseudo, text, p_yes, vision, relabel_gate=False)
    assert ungated.code.tolist()[3] == RELABELLED and ungated.labels.tolist()[3] == 0
    none = collaborate(pseudo, text, p_yes, vision, relabel=False)
    assert none.code.tolist() == [CONFIRMED, DROPPED, DROPPED, DROPPED, DROPPED]


def test_per_class_top_and_stats():
    conf = torch.tensor([0.9, 0.1, 0.5, 0.8, 0.7, 0.2])
    pseudo = torch.tensor([0, 0, 0, 1, 1, 2])
    keep = per_class_top(conf, pseudo, 3, frac=0.5)
    # class 0: ceil(1.5) = 2 of {0.9, 0.1, 0.5} -> idx 0, 2; class 1: 1 -> idx 3; class 2: 1 -> idx 5
    assert keep.tolist() == [True, False, True, True, False, True]
    truth = torch.tensor([0, 1, 1, 1, 1, -1])
    st = selection_stats(keep, pseudo, truth)
    # known & selected: 0 (correct), 2 (wrong), 3 (correct) -> precision 2/3
    # correct pseudo-labels: 0, 3, 4 -> selected 0, 3 -> recall 2/3
    assert st["frac"] == pytest.approx(4 / 6)
    assert st["precision"] == pytest.approx(2 / 3) and st["recall"] == pytest.approx(2 / 3)
    assert "precision" not in selection_stats(keep, pseudo, None)
    # UPL's fixed top-K: the same count for every class (all of a class smaller than K)
    top2 = per_class_top(conf, pseudo, 3, k=2)
    assert top2.tolist() == [True, False, True, True, True, True]
    with pytest.raises(ValueError):
        per_class_top(conf, pseudo, 3, frac=0.5, k=2)


def test_class_balance_weights():
    labels = torch.tensor([0, 0, 0, 1, 2, 2])  # counts 3, 1, 2; class 3 absent
    w = class_balance_weights(labels, 4)
    # n / (present classes * n_c) = 6 / (3 * n_c)
    torch.testing.assert_close(w, torch.tensor([6 / 9, 2.0, 1.0, 0.0]))
    # every present class weighs the same in total, and the mean weight per sample is 1
    totals = torch.bincount(labels, weights=w[labels], minlength=4)
    torch.testing.assert_close(totals[:3], torch.full((3,), 2.0))
    assert float(w[labels].mean()) == pytest.approx(1.0)


def test_moco_loss_hand_computed():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[1.0, 0.0]])
    queue = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    t = 0.5
    logits = torch.tensor([1.0, 0.0, 1.0]) / t
    logp = torch.log_softmax(logits, 0)
    torch.testing.assert_close(moco_loss(q, k, queue, t), -logp[0])
    # supervised: the queue entry with the same label is a positive too
    sup = moco_loss(q, k, queue, t, labels=torch.tensor([3]), queue_labels=torch.tensor([1, 3]))
    torch.testing.assert_close(sup, -(logp[0] + logp[2]) / 2)


# ----------------------------------------------------------------------------- configs


def test_configs_and_registration():
    assert METHODS.get("coft") is CoFT and METHODS.get("coft+") is CoFTPlus
    assert CLASSIFIERS.get("coft").kind == "coft"
    c = from_dict(CoFTConfig, {"phase1": {"epochs": 2}})
    assert c.phase1.lr == 0.03 and c.phase1.optimizer == "sgd" and c.phase1.epochs == 2  # DeFT defaults kept
    assert c.phase2.lr == 5e-4 and c.rounds == 1 and not c.moco and c.text_source == "label_texts"
    p = CoFTPlusConfig()
    assert p.rounds == 2 and p.moco and p.text_source == "texts"
    with pytest.raises(ConfigError):
        CoFTConfig(phase1_top_frac=0)
    with pytest.raises(ConfigError):
        CoFTConfig(collab_require="most")
    with pytest.raises(ConfigError):
        CoFTConfig(phase1_select="top_k", phase1_top_k=0)
    with pytest.raises(ConfigError):
        CoFTConfig(phase2_balance="oversample")


# ----------------------------------------------------------------------------- phases


@pytest.fixture
def small_cfg():
    return from_dict(CoFTConfig, {
        "n_ctx": 3, "vpt_tokens": 2, "warmup_epochs": 0,
        "phase1": {"epochs": 1, "batch_size": 6}, "phase2": {"epochs": 1, "batch_size": 6},
        "moco_queue": 8,
    })


def _batch(n=4, size=32):
    g = torch.Generator().manual_seed(0)
    return {"views": {"img": torch.randn(n, 1, 3, size, size, generator=g),
                      "key": torch.randn(n, 1, 3, size, size, generator=g)},
            "label": torch.full((n,), -1), "index": torch.arange(n)}


def test_phase1_warns_about_batches_without_a_clean_sample(small_cfg, lablog):
    """After warm-up a batch whose samples are all unclean gets L_cls = 0 (DeFT: NaN): counted,
    and one warning per epoch says how many; warm-up batches are never counted."""
    assert CoFTConfig().neg_log == "clamp"  # DeFT's; the same dev-suite top-1 as ours (docs/methods/coft.md)
    with pytest.raises(ConfigError, match="neg_log"):
        CoFTConfig(neg_log="log1p")
    bb = load_backbone(TINY)
    for p in bb.model.parameters():
        p.requires_grad_(False)
    text = torch.nn.functional.normalize(torch.randn(3, bb.embed_dim), dim=-1)
    p1 = Phase1(bb, small_cfg, ["a", "b", "c"], torch.tensor([0, 1, 2, 0]), torch.arange(4), None, 100.0, text,
                seed=0, n_train=4)
    real = p1.logits

    def unclean(out):  # the negative logits dominate: p_yes < 0.5 for every class
        s_pos, s_neg, h = real(out)
        return s_pos, s_pos.detach() + 5.0, h

    p1.logits = unclean
    out = p1.training_step(_batch(), step=0)
    assert float(out["batch_clean"]) == 0.0 and float(out["cls"]) == 0.0
    assert p1._no_clean == 1
    p1.on_epoch_end(1)
    assert "1 batch(es) had no clean sample" in lablog.text
    assert p1._no_clean == 0
    small_cfg.warmup_epochs = 1
    p1.training_step(_batch(), step=0)  # warm-up: every sample counts as clean
    assert p1._no_clean == 0


def test_phase1_gradients_reach_exactly_prompts_adapter_head(small_cfg):
    bb = load_backbone(TINY)
    for p in bb.model.parameters():
        p.requires_grad_(False)
    text = torch.nn.functional.normalize(torch.randn(3, bb.embed_dim), dim=-1)
    pseudo = torch.tensor([0, 1, 2, 0])
    p1 = Phase1(bb, small_cfg, ["a", "b", "c"], pseudo, torch.arange(4), None, 100.0, text, seed=0, n_train=4)
    out = p1.training_step(_batch(), step=0)
    out["loss"].backward()
    names = {n for n, _ in p1.named_trainable()}
    assert names == {"prompts.ctx.pos", "prompts.ctx.neg", "adapter.prompts", "head.weight", "head.bias"}
    for n, p in p1.named_trainable():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    assert all(p.grad is None for p in bb.model.parameters())
    assert not p1.adapter.is_attached  # hooks only live inside the step


def test_negative_loss_reaches_the_visual_adapter(small_cfg):
    """The abstract's 'negative prompt regularizes the visual modules': L_neg alone gives the
    VPT tokens a gradient unless neg_detach_image (DeFT) is set."""
    bb = load_backbone(TINY)
    for p in bb.model.parameters():
        p.requires_grad_(False)
    text = torch.nn.functional.normalize(torch.randn(3, bb.embed_dim), dim=-1)
    grads = {}
    for detach in (False, True):
        cfg = from_dict(CoFTConfig, {"n_ctx": 3, "vpt_tokens": 2, "neg_detach_image": detach})
        p1 = Phase1(bb, cfg, ["a", "b", "c"], torch.tensor([0, 1, 2, 0]), torch.arange(4), None, 100.0, text,
                    seed=0, n_train=4)
        with p1.adapter.attached():
            o = bb.encode_image(_batch()["views"]["img"][:, 0], tokens=True)
            s_pos, s_neg, _ = p1.logits(o)
        parts = deft_losses(s_pos, s_neg, torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 0, 1]), warmup=True)
        parts["neg"].backward()
        grads[detach] = p1.adapter.prompts.grad
    assert grads[False] is not None and grads[False].abs().sum() > 0
    assert grads[True] is None or grads[True].abs().sum() == 0


def test_phase2_gradients_reach_exactly_visual_and_head(small_cfg):
    bb = load_backbone(TINY)
    for p in bb.model.parameters():
        p.requires_grad_(False)
    names = bb.resolve_params(["visual"])
    own = dict(bb.model.named_parameters())
    for n in names:
        own[n].requires_grad_(True)
    text = torch.nn.functional.normalize(torch.randn(3, bb.embed_dim), dim=-1)
    head = make_head(bb, text, "cls", "random", 100.0, torch.Generator().manual_seed(0))
    cfg = from_dict(CoFTConfig, {"moco": True, "moco_queue": 8})
    p2 = Phase2(bb, cfg, torch.tensor([0, 1, 2, 0]), torch.arange(4), names, head, seed=0)
    out = p2.training_step(_batch(), 0)
    out["loss"].backward()
    for n, p in bb.model.named_parameters():
        if n.startswith("visual.") and n != "visual.proj":
            assert p.grad is not None, n
        elif not n.startswith("visual."):
            assert p.grad is None, n
    assert head.weight.grad is not None
    # the key encoder follows by EMA and the queue takes the keys only after the step
    before = p2.queue.clone()
    with torch.no_grad():
        own["visual.conv1.weight"].add_(1.0)
    p2.after_step(1)
    assert not torch.equal(p2.queue, before)
    k = p2.key_own["visual.conv1.weight"]
    torch.testing.assert_close(k, (own["visual.conv1.weight"] - 1.0) * 0.999 + own["visual.conv1.weight"] * 0.001)
    assert all(not p.requires_grad for p in p2.key.parameters())
    st = p2.state_dict()
    p2.load_state_dict(st)
    assert p2.queue_ptr == st["queue_ptr"]


def test_phase2_class_balanced_loss_hand_computed():
    """phase2_balance=reweight: per-sample CE x the class weight of the kept labels, over the
    batch size; ``none`` is the plain mean CE."""
    bb = load_backbone(TINY)
    for p in bb.model.parameters():
        p.requires_grad_(False)
    text = torch.nn.functional.normalize(torch.randn(3, bb.embed_dim), dim=-1)
    head = make_head(bb, text, "cls", "random", 100.0, torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 0, 0, 1, 2, 0])  # kept: the first 4 -> counts 3, 1, 0
    batch = _batch()
    with torch.no_grad():
        logits = head(bb.encode_image(batch["views"]["img"][:, 0], tokens=True).cls)
    ce = torch.nn.functional.cross_entropy(logits, labels[:4], reduction="none")
    w = torch.tensor([4 / 6, 2.0, 0.0])  # 4 kept / (2 present classes * count)
    for balance, expected in (("none", ce.mean()), ("reweight", (ce * w[labels[:4]]).mean())):
        cfg = from_dict(CoFTConfig, {"phase2_balance": balance})
        p2 = Phase2(bb, cfg, labels, torch.arange(4), [], head, seed=0)
        with torch.no_grad():
            torch.testing.assert_close(p2.training_step(batch, 0)["ce"], expected)


def test_zeroshot_head_matches_zero_shot_logits():
    bb = load_backbone(TINY)
    text = torch.nn.functional.normalize(torch.randn(3, bb.embed_dim), dim=-1)
    head = make_head(bb, text, "embed", "zeroshot", 50.0, torch.Generator())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        e = bb.encode_image(x).embeds
        torch.testing.assert_close(head(e), 50.0 * e @ text.T)


# ----------------------------------------------------------------------------- end to end


def _ctx(bb, root, out, resume=False):
    ds = build_dataset(f"imagefolder:root={root}")
    texts = {c: [f"a photo of a {c}."] for c in ds.classnames}
    return FitContext(backbone=bb, train=ds, classnames=ds.classnames, texts=texts, label_texts=texts,
                      rt=Runtime(device="cpu", batch_size=16, progress=False, cache_dir=None, seed=0),
                      out_dir=out, resume=resume, monitor=None)


def test_fit_artifact_and_resume_round_trip(colour_folder, tmp_path):
    params = {"n_ctx": 3, "vpt_tokens": 2, "collab_require": "either",
              "phase1": {"epochs": 2, "batch_size": 6}, "phase2": {"epochs": 2, "batch_size": 6}}
    cfg = from_dict(CoFTConfig, params)
    bb = load_backbone(TINY)
    base_text = bb.model.token_embedding.weight.clone()
    fit = CoFT(cfg).fit(_ctx(bb, colour_folder, tmp_path / "run"))
    assert (tmp_path / "run" / "phase1" / "checkpoint.pt").exists()
    assert (tmp_path / "run" / "phase2" / "checkpoint.pt").exists()
    assert set(fit.tuned) == set(bb.resolve_params(["visual"]))
    assert torch.equal(bb.model.token_embedding.weight, base_text)  # text tower untouched
    stages = {h["stage"] for h in fit.history}
    assert stages == {"round1/phase1", "round1/collaboration", "phase2"}
    assert all("clean_frac" in h and "clean_precision" in h for h in fit.history if h["stage"].endswith("phase1"))
    ds = build_dataset(f"imagefolder:root={colour_folder}")
    rt = Runtime(device="cpu", progress=False, cache_dir=None)
    logits = fit.classifier.predict(bb, ds, rt)
    assert logits.shape == (len(ds), 3)
    fit.classifier.save(tmp_path / "clf", bb, fit.tuned)
    clf2, bb2 = load_classifier(tmp_path / "clf")
    assert clf2.kind == "coft"
    torch.testing.assert_close(clf2.predict(bb2, ds, rt), logits, atol=1e-5, rtol=1e-5)
    # resuming a finished run reproduces the same model without retraining
    bb3 = load_backbone(TINY)
    fit3 = CoFT(cfg).fit(_ctx(bb3, colour_folder, tmp_path / "run", resume=True))
    torch.testing.assert_close(fit3.classifier.predict(bb3, ds, rt), logits, atol=1e-5, rtol=1e-5)
    # without --resume an existing run folder is refused
    with pytest.raises(Exception, match="resume"):
        CoFT(cfg).fit(_ctx(load_backbone(TINY), colour_folder, tmp_path / "run"))


def test_coft_plus_rounds_and_moco(colour_folder, tmp_path):
    params = {"n_ctx": 3, "vpt_tokens": 2, "rounds": 2, "moco_queue": 8,
              "phase1": {"epochs": 1, "batch_size": 6}, "phase2": {"epochs": 1, "batch_size": 6}}
    bb = load_backbone(TINY)
    fit = CoFTPlus(from_dict(CoFTPlusConfig, params)).fit(_ctx(bb, colour_folder, tmp_path / "plus"))
    for r in (1, 2):
        assert (tmp_path / "plus" / f"round{r}" / "phase1" / "checkpoint.pt").exists()
    assert len(fit.info["coft"]["rounds"]) == 2
    p2 = [h for h in fit.history if h["stage"] == "phase2"]
    assert p2 and "moco" in p2[0]


def test_phase1_monitor_logs_the_phase1_sides_before_phase2(colour_folder, tmp_path):
    """With a labelled monitoring set, each round logs the phase-1 text/vision top-1 on it; the
    logged value is that of the phase-1 model on the un-fine-tuned tower (phase 2's lr ~0 here,
    so the tower is the same after fit and the phase-1 model can be re-evaluated)."""
    params = {"n_ctx": 3, "vpt_tokens": 2, "collab_require": "either",
              "phase1": {"epochs": 1, "batch_size": 6}, "phase2": {"epochs": 1, "batch_size": 6, "lr": 1e-12}}
    bb = load_backbone(TINY)
    ctx = _ctx(bb, colour_folder, tmp_path / "mon")
    ctx.monitor = ctx.train
    method = CoFT(from_dict(CoFTConfig, params))
    fit = method.fit(ctx)
    logged = fit.info["coft"]["rounds"][0]["monitor"]
    inf = method.phase1_models[0].infer(ctx.train, ctx.rt)
    for side in ("text", "vision"):
        acc = 100.0 * float((inf[side].argmax(1) == ctx.train.labels).float().mean())
        assert logged[f"{side}_side_top1"] == pytest.approx(acc)
    assert any(h["stage"] == "round1/phase1_monitor" for h in fit.history)
    # off: nothing logged
    ctx_off = _ctx(load_backbone(TINY), colour_folder, tmp_path / "off")
    ctx_off.monitor = ctx_off.train
    fit_off = CoFT(from_dict(CoFTConfig, {**params, "monitor_eval": False})).fit(ctx_off)
    assert "monitor" not in fit_off.info["coft"]["rounds"][0]


def test_phase1_mid_epoch_resume_matches_uninterrupted(colour_folder, tmp_path):
    from labelless.data.features import ViewDataset
    from labelless.engine import TrainLoop
    from labelless.views import build_view

    ds = build_dataset(f"imagefolder:root={colour_folder}")
    cfg = from_dict(CoFTConfig, {"n_ctx": 2, "vpt_tokens": 2, "warmup_epochs": 1,
                                 "phase1": {"epochs": 2, "batch_size": 6, "checkpoint_every": 1}})
    pseudo = ds.labels.clone()

    def make(out):
        bb = load_backbone(TINY)
        for p in bb.model.parameters():
            p.requires_grad_(False)
        text = torch.nn.functional.normalize(torch.randn(3, bb.embed_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
        p1 = Phase1(bb, cfg, ds.classnames, pseudo, torch.arange(len(ds)), pseudo, 100.0, text, seed=0, n_train=len(ds))
        views = {"img": build_view("weak", bb)}
        loop = TrainLoop(p1, lambda e: ViewDataset(ds, views, seed=0, epoch=e), cfg.phase1, out, progress=False)
        return p1, loop

    p_ref, loop_ref = make(tmp_path / "ref")
    hist_ref = loop_ref.run()

    p_a, loop_a = make(tmp_path / "cut")
    real_step = p_a.training_step

    def failing(batch, step):
        if step == 4:  # mid epoch 2 (3 steps per epoch)
            raise KeyboardInterrupt
        return real_step(batch, step)

    p_a.training_step = failing
    with pytest.raises(KeyboardInterrupt):
        loop_a.run()
    p_b, loop_b = make(tmp_path / "cut")
    hist_b = loop_b.run(resume=True)
    for (n, a), (_, b) in zip(p_ref.named_trainable(), p_b.named_trainable()):
        torch.testing.assert_close(a, b, msg=n)
    assert hist_b[-1]["clean_frac"] == pytest.approx(hist_ref[-1]["clean_frac"])
    assert hist_b[-1]["clean_precision"] == pytest.approx(hist_ref[-1]["clean_precision"], nan_ok=True)
