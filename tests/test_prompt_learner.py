"""Learnable-prompt injection (labelless.prompt_learner) on both backends, and the visual adapters."""

from __future__ import annotations

import json
import os

import pytest
import torch

from labelless.adapters import VPTDeep
from labelless.backbones import load_backbone
from labelless.errors import ConfigError
from labelless.prompt_learner import PromptLearner, TextTower, freeze_text_tower

CLASSES = ["red apple", "green_pear", "blue sky"]


def build_tiny_hf(out_dir) -> str:
    """A tiny transformers CLIPModel + a CLIPTokenizer built offline from open_clip's BPE vocab."""
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    out_dir.mkdir(parents=True, exist_ok=True)
    st = SimpleTokenizer()
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {rename.get(k, k): v for k, v in st.encoder.items()}
    (out_dir / "vocab.json").write_text(json.dumps(vocab))
    merges = sorted(st.bpe_ranks.items(), key=lambda kv: kv[1])
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for (a, b), _ in merges))
    tok = CLIPTokenizer(str(out_dir / "vocab.json"), str(out_dir / "merges.txt"))
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=32, eos_token_id=49407,
                         bos_token_id=49406, pad_token_id=49407),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(cfg).eval().save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(out_dir)
    return "hf:" + str(out_dir)


@pytest.fixture(scope="module")
def hf_backbone(tmp_path_factory):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    spec = build_tiny_hf(tmp_path_factory.mktemp("hfclip"))
    return load_backbone(spec)


@pytest.fixture(scope="module")
def oc_backbone():
    return load_backbone("openclip:labelless-tiny:random")


@pytest.fixture(params=["openclip", "hf"])
def backbone(request, oc_backbone, hf_backbone):
    return oc_backbone if request.param == "openclip" else hf_backbone


def test_injection_equals_plain_encoder(backbone):
    """Context = the embedded template words -> exactly the plain encoder's features."""
    learner = PromptLearner(backbone, CLASSES, names=("pos", "neg"), init="a photo of a")
    assert learner.n_ctx == 4
    with torch.no_grad():
        ref = backbone.encode_text([f"a photo of a {c.replace('_', ' ')}." for c in CLASSES])
        got = learner("pos")
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    # a different context changes the features (the context is really used)
    with torch.no_grad():
        learner.ctx["neg"].add_(torch.randn_like(learner.ctx["neg"]))
        assert (learner("neg") - ref).abs().max() > 1e-3


def test_gradients_reach_only_the_context(backbone):
    freeze_text_tower(backbone)
    learner = PromptLearner(backbone, CLASSES, names=("pos", "neg"), n_ctx=3,
                            generator=torch.Generator().manual_seed(0))
    assert sorted(n for n, _ in learner.named_parameters()) == ["ctx.neg", "ctx.pos"]
    learner("pos").sum().backward()
    assert learner.ctx["pos"].grad is not None and learner.ctx["pos"].grad.abs().sum() > 0
    assert learner.ctx["neg"].grad is None
    assert all(p.grad is None for p in backbone.model.parameters())


def test_random_init_is_seeded_and_sized(oc_backbone):
    a = PromptLearner(oc_backbone, CLASSES, n_ctx=5, generator=torch.Generator().manual_seed(1))
    b = PromptLearner(oc_backbone, CLASSES, n_ctx=5, generator=torch.Generator().manual_seed(1))
    assert a.ctx["ctx"].shape == (5, TextTower(oc_backbone).width)
    torch.testing.assert_close(a.ctx["ctx"], b.ctx["ctx"])
    assert 0.01 < float(a.ctx["ctx"].detach().std()) < 0.03
    assert a().shape == (3, oc_backbone.embed_dim)


def test_context_too_long_is_a_config_error(oc_backbone):
    with pytest.raises(ConfigError, match="context length"):
        PromptLearner(oc_backbone, CLASSES, n_ctx=40)


def test_vpt_deep_hooks(backbone):
    """VPT-deep: prompts change the image features, gradients reach only the prompt tokens,
    and detaching restores the plain encoder exactly."""
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = backbone.encode_image(x, tokens=True)
    vpt = VPTDeep(backbone, n_tokens=3, generator=torch.Generator().manual_seed(0))
    assert vpt.prompts.shape[:2] == (2, 3)
    with vpt.attached():
        out = backbone.encode_image(x, tokens=True)
        assert out.patches.shape == plain.patches.shape  # prompt tokens are stripped at the end
        assert (out.embeds - plain.embeds).abs().max() > 1e-4
        for p in backbone.model.parameters():
            p.requires_grad_(False)
        out.embeds.sum().backward()
    assert vpt.prompts.grad is not None and vpt.prompts.grad[0].abs().sum() > 0
    assert vpt.prompts.grad[1].abs().sum() > 0  # deep: every layer's tokens are used
    with torch.no_grad():
        again = backbone.encode_image(x, tokens=True)
    torch.testing.assert_close(again.embeds, plain.embeds)


def test_coft_phase1_step_on_both_backends(backbone):
    """One CoFT phase-1 step: gradients reach both contexts, the VPT tokens and the head only."""
    from labelless.config import from_dict
    from labelless.methods.coft import CoFTConfig, Phase1

    for p in backbone.model.parameters():
        p.requires_grad_(False)
    cfg = from_dict(CoFTConfig, {"n_ctx": 3, "vpt_tokens": 2, "warmup_epochs": 1})
    text = torch.nn.functional.normalize(torch.randn(3, backbone.embed_dim), dim=-1)
    p1 = Phase1(backbone, cfg, CLASSES, torch.tensor([0, 1, 2, 0]), torch.arange(4), None, 100.0, text,
                seed=0, n_train=4)
    batch = {"views": {"img": torch.randn(4, 1, 3, 32, 32)}, "index": torch.arange(4)}
    p1.training_step(batch, 0)["loss"].backward()
    for n, p in p1.named_trainable():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    assert all(p.grad is None for p in backbone.model.parameters())


def test_class_specific_context_from_phrases(backbone):
    """class_init: each class's context starts from its own phrase's token embeddings; a phrase of
    exactly n_ctx tokens gives the plain encoder's features of "<phrase> <class>."; shorter
    phrases keep the shared initialisation after their tokens; other contexts are unchanged."""
    phrases = ["a photo of a", "a small", "a blue picture of"]  # 4, 2, 4 tokens
    kw = dict(names=("pos", "neg"), n_ctx=4, generator=None)
    shared = PromptLearner(backbone, CLASSES, **{**kw, "generator": torch.Generator().manual_seed(3)})
    learner = PromptLearner(backbone, CLASSES, **{**kw, "generator": torch.Generator().manual_seed(3)},
                            class_init={"pos": phrases})
    assert learner.ctx["pos"].shape == (3, 4, shared.tower.width) and learner.ctx["neg"].dim() == 2
    torch.testing.assert_close(learner.ctx["neg"], shared.ctx["neg"])  # same random draw as before
    torch.testing.assert_close(learner.ctx["pos"][1, 2:], shared.ctx["pos"][2:])  # the shared tail
    with torch.no_grad():
        ref = backbone.encode_text([f"{p} {c.replace('_', ' ')}." for p, c in zip(phrases, CLASSES)])
        got = learner("pos")
    for i in (0, 2):  # full-length phrases: exactly the plain sentence
        torch.testing.assert_close(got[i], ref[i], atol=1e-5, rtol=1e-5)
    assert (got[1] - ref[1]).abs().max() > 1e-3  # the short phrase is padded with the random tail
    with pytest.raises(ConfigError, match="one phrase per class"):
        PromptLearner(backbone, CLASSES, n_ctx=4, class_init={"ctx": phrases[:2]})


def test_coft_lora_and_separate_vision_model_on_both_backends(backbone):
    """adapter=lora + vision_model=separate on both backends: one phase-1 step reaches the LoRA
    matrices of both models and the prompts, never the towers; release leaves the tower's names."""
    from labelless.config import from_dict
    from labelless.methods.coft import CoFTConfig, Phase1

    for p in backbone.model.parameters():
        p.requires_grad_(False)
    names = [n for n, _ in backbone.model.named_parameters()]
    cfg = from_dict(CoFTConfig, {"n_ctx": 3, "warmup_epochs": 1, "adapter": "lora", "vision_model": "separate",
                                 "lora_options": {"r": 2}})
    text = torch.nn.functional.normalize(torch.randn(3, backbone.embed_dim), dim=-1)
    p1 = Phase1(backbone, cfg, CLASSES, torch.tensor([0, 1, 2, 0]), torch.arange(4), None, 100.0, text,
                seed=0, n_train=4)
    batch = {"views": {"img": torch.randn(4, 1, 3, 32, 32)}, "index": torch.arange(4)}
    p1.training_step(batch, 0)["loss"].backward()
    for prefix in ("prompts.", "adapter.", "vision_adapter.", "head."):
        grads = [p.grad for n, p in p1.named_trainable() if n.startswith(prefix) and ".lora_A." not in n]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), prefix
    for model in (backbone.model, p1.vision_bb.model):  # the towers' own weights (not the LoRA matrices)
        assert all(p.grad is None for n, p in model.named_parameters() if "lora_" not in n)
    p1.release()
    assert sorted(n for n, _ in backbone.model.named_parameters()) == sorted(names)
