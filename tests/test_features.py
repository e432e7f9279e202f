"""Feature extraction and its cache: hits skip the model, the key covers everything that changes
a feature, shards are atomic and an interrupted extraction resumes to the same result."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labelless.backbones import load_backbone
from labelless.data import build_dataset
from labelless.data.features import (
    ViewDataset,
    encode_views,
    extract_features,
    feature_cache_key,
)
from labelless.views import build_view

TINY = "openclip:labelless-tiny:random"


@pytest.fixture
def ds(colour_folder):
    return build_dataset(f"imagefolder:root={colour_folder}")


def _extract(backbone, ds, view, cache=None, **kw):
    kw.setdefault("batch_size", 4)
    return extract_features(backbone, ds, view, cache_dir=cache, progress=False, **kw)


def test_features_match_a_direct_forward(tiny_backbone, ds):
    view = build_view("crops", tiny_backbone, n=3)
    f = _extract(tiny_backbone, ds, view, seed=5, tokens=True)
    assert f.embeds.shape == (18, 3, 32) and f.cls.shape == (18, 3, 32)
    assert torch.equal(f.labels, ds.labels)
    item = ViewDataset(ds, {"v": view}, seed=5)[7]["views"]["v"]  # (3, 3, S, S)
    with torch.no_grad():
        out = tiny_backbone.encode_image(item, tokens=True)
    assert torch.allclose(f.embeds[7], out.embeds, atol=1e-5)
    assert torch.allclose(f.cls[7], out.cls, atol=1e-5)
    assert torch.allclose(f.embeds.norm(dim=-1), torch.ones(18, 3), atol=1e-5)
    # encode_views: one forward over (B, V) with the right reshaping
    views = torch.stack([ViewDataset(ds, {"v": view}, seed=5)[i]["views"]["v"] for i in (2, 9)])
    e, c = encode_views(tiny_backbone, views, tokens=False)
    assert e.shape == (2, 3, 32) and c is None
    assert torch.allclose(e, f.embeds[[2, 9]], atol=1e-5)


def test_cache_hit_does_not_call_the_model(tiny_backbone, ds, tmp_path, monkeypatch):
    view = build_view("crops", tiny_backbone, n=2)
    first = _extract(tiny_backbone, ds, view, cache=tmp_path, tokens=True)
    root = tmp_path / "features" / first.meta["cache_key"]
    assert (root / "meta.json").is_file() and list(root.glob("shard_*.npz"))

    def boom(*a, **k):
        raise AssertionError("the model was called on a cache hit")

    monkeypatch.setattr(tiny_backbone, "encode_image", boom)
    again = _extract(tiny_backbone, ds, view, cache=tmp_path, tokens=True)
    assert torch.equal(first.embeds, again.embeds) and torch.equal(first.cls, again.cls)
    assert torch.equal(first.labels, again.labels)
    # the same request without the cache must run the model
    with pytest.raises(AssertionError, match="cache hit"):
        _extract(tiny_backbone, ds, view)


def test_cache_key_covers_what_changes_a_feature(tiny_backbone, ds, tmp_path):
    view = build_view("crops", tiny_backbone, n=2)

    def key(backbone=tiny_backbone, v=view, d=ds, seed=0, tokens=False):
        return feature_cache_key(backbone, v, d, seed, tokens)

    k0 = key()
    assert k0 == key()  # stable
    assert k0 == key(backbone=load_backbone(TINY), v=build_view("crops", tiny_backbone, n=2))
    # backbone weights: another seed and a checkpoint file of the same architecture
    assert key(backbone=load_backbone(TINY + ":1")) != k0
    other = load_backbone(TINY + ":2")
    ckpt = tmp_path / "w.pt"
    torch.save(other.model.state_dict(), ckpt)
    from_file = load_backbone(f"openclip:labelless-tiny:{ckpt}")
    assert key(backbone=from_file) != k0
    with torch.no_grad():  # rewrite the checkpoint with changed weights -> new key
        other.model.visual.proj.mul_(2)
    torch.save(other.model.state_dict(), ckpt)
    assert key(backbone=load_backbone(f"openclip:labelless-tiny:{ckpt}")) != key(backbone=from_file)
    # view parameters, seed, tokens
    assert key(v=build_view("crops", tiny_backbone, n=3)) != k0
    assert key(v=build_view("crops", tiny_backbone, n=2, scale=(0.4, 0.9))) != k0
    assert key(v=build_view("global", tiny_backbone)) != k0
    assert key(seed=1) != k0
    assert key(tokens=True) != k0
    # the images: a subset, a modified file (content and mtime), a touched file
    assert key(d=ds.subset(range(10))) != k0
    path = Path(ds.paths[4])
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    k_touched = key()
    assert k_touched != k0
    with open(path, "ab") as f:
        f.write(b"\0")
    assert key() not in (k0, k_touched)


def test_shard_size_does_not_change_features(tiny_backbone, ds):
    """Crops are seeded by the image's index in the data set, not in its shard."""
    view = build_view("crops", tiny_backbone, n=2)
    whole = _extract(tiny_backbone, ds, view, shard_size=1000)
    sharded = _extract(tiny_backbone, ds, view, shard_size=5)
    assert torch.allclose(whole.embeds, sharded.embeds, atol=1e-6)
    # and images 0 and 5 (the first of two shards) get different crops
    assert not torch.allclose(sharded.embeds[0], sharded.embeds[5])


def test_interrupted_extraction_resumes_identically(tiny_backbone, ds, tmp_path, monkeypatch):
    view = build_view("crops", tiny_backbone, n=2)
    clean = _extract(tiny_backbone, ds, view, cache=tmp_path / "clean", shard_size=5, tokens=True)

    real = tiny_backbone.encode_image
    calls = {"n": 0}

    def flaky(images, tokens=False):
        calls["n"] += 1
        if calls["n"] > 2:  # batch_size 4 over shards of 5: the second shard's first batch
            raise KeyboardInterrupt
        return real(images, tokens=tokens)

    monkeypatch.setattr(tiny_backbone, "encode_image", flaky)
    cache = tmp_path / "resume"
    with pytest.raises(KeyboardInterrupt):
        _extract(tiny_backbone, ds, view, cache=cache, shard_size=5, tokens=True)
    root = next((cache / "features").iterdir())
    shards = sorted(p.name for p in root.iterdir() if p.name.startswith("shard_"))
    assert shards == ["shard_000000000_000000005.npz"]  # complete shards only, no temp files
    assert not [p for p in root.iterdir() if p.name not in ("meta.json", *shards)]
    with np.load(root / shards[0]) as z:
        assert z["embeds"].shape == (5, 2, 32) and z["cls"].shape == (5, 2, 32)

    monkeypatch.setattr(tiny_backbone, "encode_image", real)
    calls["n"] = 0
    counted = []

    def counting(images, tokens=False):
        counted.append(images.shape[0])
        return real(images, tokens=tokens)

    monkeypatch.setattr(tiny_backbone, "encode_image", counting)
    resumed = _extract(tiny_backbone, ds, view, cache=cache, shard_size=5, tokens=True)
    assert sum(counted) == (18 - 5) * 2  # the finished shard was not recomputed
    assert torch.allclose(resumed.embeds, clean.embeds, atol=1e-6)
    assert torch.allclose(resumed.cls, clean.cls, atol=1e-6)
    assert resumed.meta["cache_key"] == clean.meta["cache_key"]


def test_extract_restores_training_mode(tiny_backbone, ds):
    tiny_backbone.train()
    f = _extract(tiny_backbone, ds.subset(range(3)), build_view("global", tiny_backbone))
    assert tiny_backbone.training
    tiny_backbone.eval()
    ref = F.normalize(tiny_backbone.model.encode_image(
        torch.stack([tiny_backbone.preprocess(ds[i]["image"]) for i in range(3)])), dim=-1)
    assert torch.allclose(f.embeds[:, 0], ref.detach(), atol=1e-5)
