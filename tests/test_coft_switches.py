"""CoFT / CoFT+ switches (tiny random model, CPU): the LoRA adapter of phase 1, the positive
context initialised from the class texts, and a separate vision model. Defaults are checked too."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from labelless.backbones import load_backbone
from labelless.config import from_dict
from labelless.data import build_dataset
from labelless.data.features import ViewDataset
from labelless.engine import TrainLoop
from labelless.errors import ConfigError
from labelless.methods.base import FitContext, Runtime, load_classifier
from labelless.methods.coft import CoFT, CoFTConfig, CoFTPlusConfig, Phase1
from labelless.views import build_view

TINY = "openclip:labelless-tiny:random"
SMALL = {"n_ctx": 3, "vpt_tokens": 2, "warmup_epochs": 1, "collab_require": "either",
         "phase1": {"epochs": 1, "batch_size": 6}, "phase2": {"epochs": 1, "batch_size": 6}}


def _frozen():
    bb = load_backbone(TINY)
    for p in bb.model.parameters():
        p.requires_grad_(False)
    return bb


def _phase1(bb, params, **kw):
    text = F.normalize(torch.randn(3, bb.embed_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    pseudo = torch.tensor([0, 1, 2, 0])
    return Phase1(bb, from_dict(CoFTConfig, {**SMALL, **params}), ["a", "b", "c"], pseudo, torch.arange(4), None,
                  100.0, text, seed=0, n_train=4, **kw)


def _assert_artifact_predicts_the_same(fit, bb, colour_folder, tmp_path):
    """The saved classifier, loaded back, predicts what the fitted one does."""
    ds = build_dataset(f"imagefolder:root={colour_folder}")
    rt = Runtime(device="cpu", progress=False, cache_dir=None)
    logits = fit.classifier.predict(bb, ds, rt)
    fit.classifier.save(tmp_path / "clf", bb, fit.tuned)
    clf2, bb2 = load_classifier(tmp_path / "clf")
    torch.testing.assert_close(clf2.predict(bb2, ds, rt), logits, atol=1e-5, rtol=1e-5)


def _batch(n=4, size=32):
    g = torch.Generator().manual_seed(0)
    return {"views": {"img": torch.randn(n, 1, 3, size, size, generator=g)}, "index": torch.arange(n)}


def _snapshot(bb):
    return {n: p.detach().clone() for n, p in bb.model.named_parameters()}


def _ctx(bb, root, out, texts=None):
    ds = build_dataset(f"imagefolder:root={root}")
    texts = texts or {c: [f"a photo of a {c}."] for c in ds.classnames}
    return FitContext(backbone=bb, train=ds, classnames=ds.classnames, texts=texts, label_texts=texts,
                      rt=Runtime(device="cpu", batch_size=16, progress=False, cache_dir=None, seed=0),
                      out_dir=out, resume=False, monitor=None)


def test_defaults_unchanged_and_bad_values_refused():
    for c in (CoFTConfig(), CoFTPlusConfig()):
        assert (c.adapter, c.pos_ctx_init, c.vision_model, c.lora_options) == ("vpt", "ctx_init", "shared", {})
    for bad in ({"adapter": "adapterfusion"}, {"pos_ctx_init": "llm"}, {"vision_model": "other"},
                {"lora_options": {"rank": 4}}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            from_dict(CoFTConfig, bad)


# ----------------------------------------------------------------------------- adapter: lora


def test_lora_phase1_trains_only_lora_and_leaves_the_tower_exactly(colour_folder, tmp_path):
    """adapter=lora: phase 1 trains the prompts, the LoRA matrices and the head only; after the
    round the backbone has its own modules, names and bit-identical weights again."""
    bb = _frozen()
    before = _snapshot(bb)
    ds = build_dataset(f"imagefolder:root={colour_folder}")
    cfg = from_dict(CoFTConfig, {**SMALL, "adapter": "lora", "lora_options": {"r": 2},
                                 "phase1": {"epochs": 2, "batch_size": 6}})
    text = F.normalize(torch.randn(3, bb.embed_dim, generator=torch.Generator().manual_seed(0)), dim=-1)
    p1 = Phase1(bb, cfg, ds.classnames, ds.labels.clone(), torch.arange(len(ds)), None, 100.0, text,
                seed=0, n_train=len(ds))
    names = [n for n, _ in p1.named_trainable()]
    lora = [n for n in names if n.startswith("adapter.")]
    assert lora and all(".lora_A." in n or ".lora_B." in n for n in lora)
    assert set(names) - set(lora) == {"prompts.ctx.pos", "prompts.ctx.neg", "head.weight", "head.bias"}
    assert not [n for n, p in bb.model.named_parameters() if p.requires_grad and "lora_" not in n]
    init = {n: p.detach().clone() for n, p in p1.named_trainable()}
    views = {"img": build_view("weak", bb)}
    TrainLoop(p1, lambda e: ViewDataset(ds, views, seed=0, epoch=e), cfg.phase1, tmp_path / "p1",
              progress=False).run()
    for n, p in p1.named_trainable():
        if ".lora_A." not in n:  # lora_B starts at 0, so lora_A's first gradients are 0
            assert not torch.equal(p, init[n]), n
    with p1.adapter.attached():  # the trained LoRA changes the encoder's output
        x = _batch()["views"]["img"][:, 0]
        with torch.no_grad():
            adapted = bb.encode_image(x).embeds
    p1.release()
    after = _snapshot(bb)
    assert set(after) == set(before)
    for n, t in before.items():
        assert torch.equal(after[n], t), n  # exactly the pre-trained weights
    with torch.no_grad():
        plain = bb.encode_image(x).embeds
    assert (adapted - plain).abs().max() > 1e-4
    # the released adapter still answers for inspection, then leaves the tower as it was
    with torch.no_grad():
        again = p1.infer(ds, Runtime(device="cpu", progress=False, cache_dir=None))
    assert again["text"].shape == (len(ds), 3)
    assert set(n for n, _ in bb.model.named_parameters()) == set(before)


def test_lora_fit_phase2_and_artifact_round_trip(colour_folder, tmp_path):
    bb = load_backbone(TINY)
    fit = CoFT(from_dict(CoFTConfig, {**SMALL, "adapter": "lora"})).fit(_ctx(bb, colour_folder, tmp_path / "run"))
    assert set(fit.tuned) == set(bb.resolve_params(["visual"]))  # plain names: no LoRA left
    assert not any("lora" in n for n, _ in bb.model.named_parameters())
    _assert_artifact_predicts_the_same(fit, bb, colour_folder, tmp_path)


# ----------------------------------------------------------------------------- pos_ctx_init


def test_positive_context_starts_from_the_class_text(colour_folder, tmp_path):
    """pos_ctx_init=class_text: fit gives phase 1 each class's first zero-shot text; the positive
    context of class c starts with that text's token embeddings (checked after a phase 1 with lr
    ~0), the negative context stays shared."""
    bb = _frozen()
    with pytest.raises(ConfigError, match="class_texts"):
        _phase1(bb, {"pos_ctx_init": "class_text"})
    ds = build_dataset(f"imagefolder:root={colour_folder}")
    texts = {c: [f"a glossy {c} square.", "an object."] for c in ds.classnames}
    params = {**SMALL, "n_ctx": 2, "pos_ctx_init": "class_text", "text_source": "texts",
              "phase1": {"epochs": 1, "batch_size": 6, "lr": 1e-12}}
    method = CoFT(from_dict(CoFTConfig, params))
    method.fit(_ctx(load_backbone(TINY), colour_folder, tmp_path / "run", texts=texts))
    prompts = method.phase1_models[0].prompts
    ctx_pos = prompts.ctx["pos"].detach()
    assert ctx_pos.shape[:2] == (3, 2) and prompts.ctx["neg"].dim() == 2
    emb = prompts.tower.token_embedding
    for i, c in enumerate(ds.classnames):
        ids, _ = prompts.tower.tokenize([f"a glossy {c} square"])
        torch.testing.assert_close(ctx_pos[i], emb(ids)[0, 1:3].float(), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- vision_model


def test_separate_vision_model_is_its_own_copy():
    """vision_model=separate: the head reads a copy of the image tower with its own lightweight
    module. The head's loss trains that module only (not the text side's prompts or VPT); the
    text side's losses never reach it; an optimiser step moves the copy's module alone, and both
    towers' weights stay frozen."""
    bb = _frozen()
    p1 = _phase1(bb, {"vision_model": "separate"})
    vb = p1.vision_bb
    assert vb is not bb and p1.vision_adapter is not p1.adapter
    own, vown = dict(bb.model.named_parameters()), dict(vb.model.named_parameters())
    assert all(own[n].data_ptr() != vown[n].data_ptr() and torch.equal(own[n], vown[n]) for n in own)
    names = {n for n, _ in p1.named_trainable()}
    assert {"adapter.prompts", "vision_adapter.prompts"} <= names
    x = _batch()["views"]["img"][:, 0]
    y = torch.tensor([0, 1, 2, 0])

    # the vision side's loss alone
    F.cross_entropy(p1.vision_logits(x), y).backward()
    assert p1.vision_adapter.prompts.grad.abs().sum() > 0 and p1.head.weight.grad.abs().sum() > 0
    assert p1.adapter.prompts.grad is None
    assert all(p.grad is None for p in p1.prompts.parameters())
    # the text side's losses alone
    for _, p in p1.named_trainable():
        p.grad = None
    with p1.adapter.attached():
        s_pos, s_neg, h = p1.logits(bb.encode_image(x, tokens=True))
    assert h is None  # the head does not read the text side's encoder
    (F.cross_entropy(s_pos, y) + s_neg.sum()).backward()
    assert p1.adapter.prompts.grad.abs().sum() > 0
    assert p1.vision_adapter.prompts.grad is None and p1.head.weight.grad is None
    assert all(p.grad is None for p in list(bb.model.parameters()) + list(vb.model.parameters()))

    # one training step: the vision module moves, the text-side VPT by its own loss, towers frozen
    for _, p in p1.named_trainable():
        p.grad = None
    base, vbase = _snapshot(bb), _snapshot(vb)
    v0, t0 = p1.vision_adapter.prompts.detach().clone(), p1.adapter.prompts.detach().clone()
    opt = torch.optim.SGD([p for _, p in p1.named_trainable()], lr=1.0)
    p1.training_step(_batch(), 0)["loss"].backward()
    opt.step()
    assert not torch.equal(p1.vision_adapter.prompts, v0) and not torch.equal(p1.adapter.prompts, t0)
    assert all(torch.equal(t, own[n]) for n, t in base.items())
    assert all(torch.equal(t, vown[n]) for n, t in vbase.items())


def test_separate_vision_model_infer_sides_are_independent(colour_folder):
    """Perturbing the text side's VPT changes only the text-side logits and perturbing the
    vision copy's VPT only the vision-side logits (with ``shared`` the text side's VPT moves
    both)."""
    ds = build_dataset(f"imagefolder:root={colour_folder}")
    rt = Runtime(device="cpu", batch_size=16, progress=False, cache_dir=None)
    for mode in ("separate", "shared"):
        p1 = _phase1(_frozen(), {"vision_model": mode})
        ref = p1.infer(ds, rt)
        with torch.no_grad():
            p1.adapter.prompts.add_(1.0)
        moved = p1.infer(ds, rt)
        assert not torch.equal(moved["text"], ref["text"])
        assert torch.equal(moved["vision"], ref["vision"]) == (mode == "separate")
        if mode == "separate":
            with torch.no_grad():
                p1.vision_adapter.prompts.add_(1.0)
            moved2 = p1.infer(ds, rt)
            assert torch.equal(moved2["text"], moved["text"])
            assert not torch.equal(moved2["vision"], moved["vision"])


def test_separate_vision_model_fit_with_rounds_and_lora(colour_folder, tmp_path):
    """A CoFT+-style fit (2 rounds) with a separate LoRA vision model: both rounds share one
    frozen copy, phase 2 fine-tunes the main tower only, and the artifact round-trips."""
    from labelless.methods.coft import CoFTPlus

    bb = load_backbone(TINY)
    base_text = bb.model.token_embedding.weight.clone()
    params = {**SMALL, "vision_model": "separate", "adapter": "lora", "rounds": 2, "moco_queue": 8}
    method = CoFTPlus(from_dict(CoFTPlusConfig, params))
    fit = method.fit(_ctx(bb, colour_folder, tmp_path / "run"))
    m1, m2 = method.phase1_models
    assert m1.vision_bb is m2.vision_bb and m1.vision_bb is not bb
    vown = dict(m1.vision_bb.model.named_parameters())
    assert not any("lora" in n for n in vown)
    # the copy is still the pre-trained tower: phase 2 changed bb's visual weights, not the copy's
    fresh = dict(load_backbone(TINY).model.named_parameters())
    assert all(torch.equal(vown[n], fresh[n]) for n in vown)
    assert any(not torch.equal(fit.tuned[n], fresh[n]) for n in fit.tuned)
    assert torch.equal(bb.model.token_embedding.weight, base_text)
    _assert_artifact_predicts_the_same(fit, bb, colour_folder, tmp_path)


def test_gate_logits_stay_fp32_under_bf16_autocast():
    """The cosine logits behind the cleanliness gate (p_yes > 0.5) and the losses are fp32 even when
    the run autocasts the encoder to bf16 (the CPU autocast exercises the branch GPU runs take)."""
    bb = _frozen()
    p1 = _phase1(bb, {})
    x = _batch()["views"]["img"][:, 0]
    with torch.no_grad(), p1.adapter.attached():
        out32 = bb.encode_image(x, tokens=True)
        ref_pos, ref_neg, _ = p1.logits(out32)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = bb.encode_image(x, tokens=True)
            s_pos, s_neg, _ = p1.logits(out)
            plain = p1.scale * out.embeds @ p1.prompts("pos").T  # what autocast alone would give
    assert s_pos.dtype == s_neg.dtype == torch.float32
    assert plain.dtype == torch.bfloat16  # the branch is live: without the guard the logits are bf16
    assert ref_pos.dtype == ref_neg.dtype == torch.float32  # fp32 runs unchanged
