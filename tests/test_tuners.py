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


def test_registered_tuners():
    assert {"layernorm", "lora", "full"} <= set(TUNERS.names())
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
    # applying the merged tensors to a fresh base model reproduces the adapted model
    fresh = load_backbone(TINY)
    with torch.no_grad():
        own = dict(fresh.model.named_parameters())
        for n, t in tuned.items():
            own[n].copy_(t)
        torch.testing.assert_close(fresh.encode_image(x).embeds, adapted, atol=1e-5, rtol=1e-4)


def test_lora_bad_target_is_a_config_error(tiny_backbone):
    with pytest.raises(ConfigError, match="matches no module"):
        build_tuner(tiny_backbone, "lora", targets=r"nothing\.here")
