"""Tuners: each selects exactly its parameters, gradients reach them, LoRA merges into plain weights."""

from __future__ import annotations

import pytest
import torch

from labelless.backbones import load_backbone
from labelless.errors import ConfigError, UnknownNameError
from labelless.registry import TUNERS
from labelless.tuners import build_tuner

TINY = "openclip:labelless-tiny:random"


def _trainable(backbone) -> set[str]:
    return {n for n, p in backbone.model.named_parameters() if p.requires_grad}


def _grad_step(backbone, tuner):
    """One backward through the image tower; every trainable parameter must get a gradient."""
    x = torch.randn(2, 3, backbone.image_size, backbone.image_size, generator=torch.Generator().manual_seed(0))
    backbone.encode_image(x).embeds.pow(2).sum().backward()
    missing = [n for n, p in tuner.named_parameters() if p.grad is None]
    assert not missing, missing



def _assert_fresh_base_with(tuned: dict, x, adapted) -> None:
    """Copying the merged tensors ``tuned`` into a fresh base model reproduces ``adapted``."""
    fresh = load_backbone(TINY)
    with torch.no_grad():
        own = dict(fresh.model.named_parameters())
        for n, t in tuned.items():
            own[n].copy_(t)
        torch.testing.assert_close(fresh.encode_image(x).embeds, adapted, atol=1e-5, rtol=1e-4)

def test_registered_tuners():
    assert {"layernorm", "lora", "full", "kadaptation"} <= set(TUNERS.names())
    with pytest.raises(UnknownNameError, match="layernorm"):
        build_tuner(load_backbone(TINY), "layernrom")


def test_layernorm_tuner_selects_visual_layernorms(tiny_backbone):
    tuner = build_tuner(tiny_backbone, "layernorm")
    expected = set(tiny_backbone.resolve_params(["visual_ln"]))
    assert _trainable(tiny_backbone) == expected
    assert all(n.startswith("visual.") and (".ln_" in n or "visual.ln_" in n) for n in expected)
    assert len(expected) == 12  # ln_pre, 2 blocks x (ln_1, ln_2), ln_post; weight + bias
    _grad_step(tiny_backbone, tuner)
    assert set(tuner.finalize()) == expected
    assert "layernorm tuner: 384 of" in tuner.report()


def test_full_tuner_selects_the_visual_tower_only(tiny_backbone):
    tuner = build_tuner(tiny_backbone, "full")
    trainable = _trainable(tiny_backbone)
    assert trainable == {n for n, _ in tiny_backbone.model.visual.named_parameters(prefix="visual")}
    assert not any(n.startswith(("transformer.", "token_embedding", "text_projection")) for n in trainable)
    _grad_step(tiny_backbone, tuner)


def test_group_tuner_takes_other_groups(tiny_backbone):
    build_tuner(tiny_backbone, "layernorm", groups=["visual_ln", "re:^visual\\.proj$"])
    assert "visual.proj" in _trainable(tiny_backbone)
    with pytest.raises(ConfigError, match="bad options"):
        build_tuner(tiny_backbone, "layernorm", rank=3)


def test_lora_tuner_trains_only_adapters_then_merges(tiny_backbone):
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        e0 = tiny_backbone.encode_image(x).embeds
    base_names = {n for n, _ in tiny_backbone.model.named_parameters()}
    torch.manual_seed(0)
    tuner = build_tuner(tiny_backbone, "lora", r=2, alpha=4)
    trainable = _trainable(tiny_backbone)
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    assert all(n.startswith("visual.") for n in trainable)
    with torch.no_grad():  # LoRA starts as the identity (B = 0)
        torch.testing.assert_close(tiny_backbone.encode_image(x).embeds, e0)
    _grad_step(tiny_backbone, tuner)
    with torch.no_grad():
        for n, p in tuner.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
        adapted = tiny_backbone.encode_image(x).embeds
    assert not torch.allclose(adapted, e0)
    tuned = tuner.finalize()
    # merged: the module tree is the base one again, and the output is unchanged by merging
    assert {n for n, _ in tiny_backbone.model.named_parameters()} == base_names
    with torch.no_grad():
        torch.testing.assert_close(tiny_backbone.encode_image(x).embeds, adapted, atol=1e-5, rtol=1e-4)
    assert set(tuned) <= base_names
    assert any(n.endswith("attn.in_proj_weight") for n in tuned)
    assert any(n.endswith("mlp.c_fc.weight") for n in tuned)
    _assert_fresh_base_with(tuned, x, adapted)


def test_lora_bad_target_is_a_config_error(tiny_backbone):
    with pytest.raises(ConfigError, match="matches no module"):
        build_tuner(tiny_backbone, "lora", targets=r"nothing\.here")


def test_kadaptation_kronecker_delta_hand_computed():
    from labelless.tuners import KroneckerDelta

    d = KroneckerDelta(torch.Size([6, 4]), n=2, r=1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        d.v.normal_()
        expected = sum(torch.kron(d.A[i], d.u[i] @ d.v[i].T) for i in range(2))
    torch.testing.assert_close(d.delta(), expected)
    assert torch.equal(KroneckerDelta(torch.Size([6, 4]), 2, 1, torch.Generator()).delta(), torch.zeros(6, 4))
    with pytest.raises(ConfigError, match="must divide"):
        KroneckerDelta(torch.Size([6, 5]), 2, 1, torch.Generator())


def test_kadaptation_tuner_trains_only_its_factors_then_merges(tiny_backbone):
    """Only the Kronecker factors are trainable; the update starts at 0; finalize merges it into
    plain attention weights, and those tensors on a fresh base model reproduce the adapted one."""
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        e0 = tiny_backbone.encode_image(x).embeds
    base = {n: p.detach().clone() for n, p in tiny_backbone.model.named_parameters()}
    torch.manual_seed(0)
    tuner = build_tuner(tiny_backbone, "kadaptation", n=4, r=2)
    trainable = {n for n, _ in tuner.named_parameters()}
    assert trainable and all(n.startswith("visual.") and n.rsplit(".", 1)[-1] in {"A", "u", "v"} for n in trainable)
    assert "kadaptation tuner" in tuner.report()
    with torch.no_grad():
        torch.testing.assert_close(tiny_backbone.encode_image(x).embeds, e0)  # dW = 0 at the start
    _grad_step(tiny_backbone, tuner)
    with torch.no_grad():
        for n, p in tuner.named_parameters():
            if n.endswith(".v"):
                p.normal_(0, 0.5)
        adapted = tiny_backbone.encode_image(x).embeds
    assert not torch.allclose(adapted, e0)
    tuned = tuner.finalize()
    assert set(tuned) == {f"visual.transformer.resblocks.{i}.attn.{w}" for i in range(2)
                          for w in ("in_proj_weight", "out_proj.weight")}
    assert {n for n, _ in tiny_backbone.model.named_parameters()} == set(base)  # plain weights again
    changed = {n for n, p in tiny_backbone.model.named_parameters() if not torch.equal(p, base[n])}
    assert changed == set(tuned)
    with torch.no_grad():
        torch.testing.assert_close(tiny_backbone.encode_image(x).embeds, adapted, atol=1e-5, rtol=1e-4)
    _assert_fresh_base_with(tuned, x, adapted)
    with pytest.raises(ConfigError, match="must divide"):
        build_tuner(load_backbone(TINY), "kadaptation", n=5)
