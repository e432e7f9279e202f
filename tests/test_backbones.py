"""Backbones: checkpoints in the real formats round-trip through the real loaders, parameter
groups select exactly what they name, [CLS] tokens match the embeddings, and every bad spec is
a BackboneError that says what to do. No test touches the network (sockets are blocked)."""

from __future__ import annotations

import json
import socket

import open_clip
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from labelless.backbones import load_backbone, select_trainable
from labelless.backbones.openclip import add_model_configs
from labelless.errors import BackboneError

add_model_configs()  # open_clip.create_model("labelless-tiny") below, before any backbone loads

TINY = "openclip:labelless-tiny:random"
TEXTS = ["a photo of a red car.", "satellite image of sea or lake", "hello world"]


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _images(n=3, size=32, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _other_tiny_model(seed=123):
    torch.manual_seed(seed)
    return open_clip.create_model("labelless-tiny", pretrained=None).eval()


# ---- open_clip formats ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def oc_ckpt(tmp_path_factory):
    model = _other_tiny_model()
    path = tmp_path_factory.mktemp("oc") / "tiny_state.pt"
    torch.save(model.state_dict(), path)
    return model, path


def test_openclip_state_dict_file_roundtrip(oc_ckpt):
    model, path = oc_ckpt
    b = load_backbone(f"openclip:labelless-tiny:{path}")
    x = _images()
    tok = open_clip.get_tokenizer("labelless-tiny")(TEXTS)
    with torch.no_grad():
        assert torch.equal(b.encode_image(x).embeds, F.normalize(model.encode_image(x), dim=-1))
        assert torch.equal(b.encode_text(TEXTS), F.normalize(model.encode_text(tok), dim=-1))
    rand = load_backbone(TINY)
    assert b.fingerprint != rand.fingerprint
    assert "sha256:" in b.fingerprint
    with torch.no_grad():  # and the weights really are not the random init
        assert not torch.allclose(b.encode_image(x).embeds, rand.encode_image(x).embeds)
    # same file -> same fingerprint; random init is seeded -> same fingerprint and weights
    assert load_backbone(f"openclip:labelless-tiny:{path}").fingerprint == b.fingerprint
    assert load_backbone(TINY).fingerprint == rand.fingerprint
    assert load_backbone("openclip:labelless-tiny:random:1").fingerprint != rand.fingerprint


def _write_local_dir(folder, model, preprocess_cfg):
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"model_cfg": open_clip.get_model_config("labelless-tiny"), "preprocess_cfg": preprocess_cfg}
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))


def test_openclip_local_dir_roundtrip(tmp_path):
    model = _other_tiny_model(7)
    pp = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bilinear",
          "resize_mode": "shortest"}
    folder = tmp_path / "oc_dir"
    _write_local_dir(folder, model, pp)
    b = load_backbone(f"openclip:local-dir:{folder}")
    x = _images()
    tok = open_clip.get_tokenizer("labelless-tiny")(TEXTS)
    with torch.no_grad():
        assert torch.equal(b.encode_image(x).embeds, F.normalize(model.encode_image(x), dim=-1))
        assert torch.equal(b.encode_text(TEXTS), F.normalize(model.encode_text(tok), dim=-1))
    # the preprocessing travels with the weights
    assert b.mean == (0.5, 0.5, 0.5) and b.std == (0.25, 0.25, 0.25)
    assert b.image_size == 32
    # new weights in the same folder -> a new fingerprint (cache keys must not go stale)
    fp = b.fingerprint
    _write_local_dir(folder, _other_tiny_model(8), pp)
    assert load_backbone(f"openclip:local-dir:{folder}").fingerprint != fp


# ---- Hugging Face format --------------------------------------------------------------------
@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    from hf_tiny import make_tiny_hf_clip

    out = tmp_path_factory.mktemp("hf") / "tiny_clip"
    model, tokenizer, processor = make_tiny_hf_clip(out)
    return out, model, tokenizer


@pytest.fixture(scope="module")
def hf_backbone(hf_dir):
    return load_backbone(f"hf:{hf_dir[0]}")


def _tensor(out):
    """transformers < 5 returns the projected features, >= 5 a model output holding them."""
    return out if torch.is_tensor(out) else out.pooler_output


def test_hf_save_pretrained_roundtrip(hf_dir, hf_backbone):
    out, model, tokenizer = hf_dir
    b = hf_backbone
    assert b.backend == "hf" and b.image_size == 32 and b.embed_dim == 16
    assert b.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    x = _images()
    enc = tokenizer(TEXTS, padding="max_length", max_length=32, return_tensors="pt")
    with torch.no_grad():
        ref_img = _tensor(model.get_image_features(pixel_values=x))
        ref_txt = _tensor(model.get_text_features(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]))
        assert ref_img.shape == (3, 16) and ref_txt.shape == (3, 16)
        assert torch.allclose(b.encode_image(x).embeds, F.normalize(ref_img, dim=-1), atol=1e-6)
        assert torch.allclose(b.encode_text(TEXTS), F.normalize(ref_txt, dim=-1), atol=1e-6)
    assert b.fingerprint.startswith("hf|CLIPModel|sha256:")
    assert b.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()))


def test_hf_tokenizer_matches_open_clip(hf_backbone):
    texts = ["a photo of a dog.", "satellite image of annual crop land", "a  blurry   photo!"]
    hf_ids = hf_backbone.tokenize(texts)  # (T, 2, L): ids and attention mask
    oc_ids = open_clip.get_tokenizer("labelless-tiny")(texts)  # (T, L), 0-padded
    assert hf_ids.shape == (3, 2, 32) and oc_ids.shape == (3, 32)
    for i in range(len(texts)):
        n = int(hf_ids[i, 1].sum())
        assert n == int((oc_ids[i] != 0).sum())
        assert hf_ids[i, 0, :n].tolist() == oc_ids[i, :n].tolist()
        assert hf_ids[i, 0, 0] == 49406 and hf_ids[i, 0, n - 1] == 49407


# ---- parameter groups -----------------------------------------------------------------------
def _backbone(kind, hf_backbone):
    return load_backbone(TINY) if kind == "openclip" else hf_backbone


VISUAL_LN = {
    "openclip": ("ln_pre", "ln_1", "ln_2", "ln_post"),
    "hf": ("pre_layrnorm", "layer_norm1", "layer_norm2", "post_layernorm"),
}


@pytest.mark.parametrize("kind", ["openclip", "hf"])
def test_visual_ln_group_is_exact(kind, request):
    b = load_backbone(TINY) if kind == "openclip" else request.getfixturevalue("hf_backbone")
    names = b.param_groups()["visual_ln"]
    layers = 2
    # pre + post LayerNorm + 2 per block, each weight and bias
    assert len(names) == 2 * (2 + 2 * layers)
    expected = set()
    for n, _ in b.model.named_parameters():
        is_visual = n.startswith(("visual.", "vision_model."))
        if is_visual and any(f".{m}." in f".{n}" for m in VISUAL_LN[kind]):
            expected.add(n)
    assert set(names) == expected
    assert all(n.endswith((".weight", ".bias")) for n in names)
    modules = dict(b.model.named_modules())
    assert all(isinstance(modules[n.rsplit(".", 1)[0]], torch.nn.LayerNorm) for n in names)
    # the text tower's LayerNorms are a different group
    assert not set(names) & set(b.param_groups()["text_ln"])
    assert set(b.resolve_params(["visual_ln", "text_ln"])) == set(names) | set(b.param_groups()["text_ln"])


@pytest.mark.parametrize("kind", ["openclip", "hf"])
def test_select_trainable_only_selected_get_grads(kind, request):
    if kind == "openclip":
        b = load_backbone(TINY)
    else:
        hf_out = request.getfixturevalue("hf_dir")[0]
        b = load_backbone(f"hf:{hf_out}")  # a fresh copy: this test changes requires_grad
    selected = set(select_trainable(b, ["visual_ln"]))
    assert selected == set(b.param_groups()["visual_ln"])
    out = b.encode_image(_images(2), tokens=True)
    loss = out.embeds.sum() + out.cls.pow(2).sum() + b.encode_text(["a cat"]).sum()
    loss.backward()
    for n, p in b.model.named_parameters():
        if n in selected:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert not p.requires_grad and p.grad is None, n
    with pytest.raises(Exception, match="unknown parameter group"):
        b.resolve_params(["visual_lns"])
    with pytest.raises(Exception, match="matches no parameter"):
        b.resolve_params(["re:^nothing_like_this$"])


@pytest.mark.parametrize("kind", ["openclip", "hf"])
def test_tokens_match_embeddings(kind, request):
    b = load_backbone(TINY) if kind == "openclip" else request.getfixturevalue("hf_backbone")
    x = _images(4, seed=3)
    with torch.no_grad():
        plain = b.encode_image(x).embeds
        full = b.encode_image(x, tokens=True)
    assert full.cls.shape == (4, 32) and full.patches.shape == (4, 16, 32)
    assert torch.allclose(full.embeds, plain, atol=1e-6)
    if kind == "openclip":
        proj = full.cls @ b.model.visual.proj
    else:
        proj = b.model.visual_projection(full.cls)
    assert torch.allclose(F.normalize(proj, dim=-1), plain, atol=1e-6)
    assert torch.allclose(plain.norm(dim=-1), torch.ones(4), atol=1e-5)


# ---- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec, pattern",
    [
        ("nosuch:ViT-B-32", r"unknown backbone source 'nosuch'.*Sources: hf, openclip"),
        ("openclip", r"bad backbone spec 'openclip'"),
        ("openclip:vit-b-32:random", r"unknown open_clip architecture 'vit-b-32'. Did you mean 'ViT-B-32'"),
        ("openclip:ViT-B-32", r"names no weights.*tags: .*laion2b_s34b_b79k.*openclip:ViT-B-32:random"),
        ("openclip:ViT-B-32:laion2b_s34b_b80k", r"unknown weights tag 'laion2b_s34b_b80k'.*Did you mean 'laion2b_s34b_b79k'.*Valid tags"),
        ("openclip:labelless-tiny:/no/such/ckpt.pt", r"checkpoint file '/no/such/ckpt.pt' does not exist"),
        ("openclip:labelless-tiny:random:x", r"random seed .* must be an integer"),
        ("hf:/no/such/hf_dir", r"Hugging Face model directory '/no/such/hf_dir' does not exist"),
    ],
)
def test_backbone_errors(spec, pattern):
    with pytest.raises(BackboneError, match=pattern):
        load_backbone(spec)


def test_corrupt_checkpoint_is_backbone_error(tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match="could not build backbone"):
        load_backbone(f"openclip:labelless-tiny:{bad}")
