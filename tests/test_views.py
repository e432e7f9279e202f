"""Views: deterministic per (seed, epoch, index) whatever the worker count, crop geometry as
documented, tiny images still give (V, 3, S, S), and the cache-relevant config tracks every
parameter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from labelless.data import build_dataset
from labelless.data.features import ViewDataset
from labelless.errors import ConfigError
from labelless.views import CropConfig, build_view, crop_boxes, sample_rng


def _img(w=48, h=40, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_sample_rng_depends_on_seed_epoch_index():
    a = sample_rng(0, 5).random(4)
    assert np.array_equal(a, sample_rng(0, 5, 0).random(4))
    for other in (sample_rng(1, 5), sample_rng(0, 6), sample_rng(0, 5, 1)):
        assert not np.array_equal(a, other.random(4))


@pytest.mark.parametrize("w, h", [(64, 64), (200, 50), (37, 91), (3, 2)])
def test_crop_boxes_geometry(w, h):
    cfg = CropConfig(n=500, scale=(0.4, 0.8))
    boxes = crop_boxes(w, h, cfg, np.random.default_rng(0))
    assert boxes.shape == (500, 4)
    left, top, right, bottom = boxes.T
    side = right - left
    assert np.array_equal(side, bottom - top)  # square
    short = min(w, h)
    lo, hi = max(1, round(0.4 * short)), max(1, round(0.8 * short))
    assert side.min() >= lo and side.max() <= hi
    assert (left >= 0).all() and (top >= 0).all() and (right <= w).all() and (bottom <= h).all()
    if short >= 50:  # the sides actually spread over the range, positions over the image
        assert side.min() <= lo + 2 and side.max() >= hi - 2
        assert left.min() <= 2 and right.max() >= w - 2


def test_crop_config_validation():
    with pytest.raises(ConfigError, match="crops.n"):
        CropConfig(n=0)
    with pytest.raises(ConfigError, match="crops.scale"):
        CropConfig(scale=(0.9, 0.5))
    with pytest.raises(ConfigError, match="crops.scale"):
        CropConfig(scale=(0.0, 0.5))


def test_crops_view_shapes_and_determinism(tiny_backbone):
    view = build_view("crops", tiny_backbone, n=5, scale=(0.5, 0.9))
    img = _img()
    a = view(img, sample_rng(0, 3))
    assert a.shape == (5, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, view(img, sample_rng(0, 3)))
    assert not torch.equal(a, view(img, sample_rng(1, 3)))
    # the crops are different regions of the image
    assert not torch.equal(a[0], a[1])
    g = build_view("crops", tiny_backbone, n=5, include_global=True)
    out = g(img, sample_rng(0, 3))
    assert out.shape == (6, 3, 32, 32) and g.num_views == 6
    assert torch.allclose(out[0], tiny_backbone.preprocess(img), atol=1e-6)


def test_crop_is_the_box_resized(tiny_backbone):
    """Each crop view equals the backbone preprocessing of the documented box, exactly (the
    fast path must not change a pixel)."""
    view = build_view("crops", tiny_backbone, n=4, scale=(0.3, 0.7))
    assert view._fast is not None  # open_clip "shortest" with a square size: fast path
    for w, h, seed in [(90, 60, 4), (64, 64, 1), (33, 120, 2)]:
        img = _img(w, h, seed=seed)
        boxes = crop_boxes(img.width, img.height, view.cfg, sample_rng(2, 7))
        out = view(img, sample_rng(2, 7))
        for k, box in enumerate(boxes):
            assert torch.equal(out[k], tiny_backbone.preprocess(img.crop(tuple(int(v) for v in box))))


def test_crops_fall_back_to_the_preprocess(tiny_backbone):
    """A preprocessing that is not a plain square resize (resize 40, centre crop 32) is applied
    per crop as is."""
    from types import SimpleNamespace

    from torchvision import transforms as T

    pre = T.Compose([T.Resize(40), T.CenterCrop(32), T.ToTensor(), T.Normalize(tiny_backbone.mean, tiny_backbone.std)])
    fake = SimpleNamespace(preprocess=pre, image_size=32, mean=tiny_backbone.mean, std=tiny_backbone.std,
                           preprocess_cfg={"size": 32, "resize": 40, "interpolation": "bilinear"})
    view = build_view("crops", fake, n=3)
    assert view._fast is None
    img = _img(70, 50, seed=9)
    boxes = crop_boxes(img.width, img.height, view.cfg, sample_rng(0, 0))
    out = view(img, sample_rng(0, 0))
    for k, box in enumerate(boxes):
        assert torch.equal(out[k], pre(img.crop(tuple(int(v) for v in box))))


@pytest.mark.parametrize("size", [(1, 1), (5, 3), (20, 7)])
def test_tiny_images_still_give_full_views(tiny_backbone, size):
    img = _img(*size)
    for name, opts, v in [("global", {}, 1), ("crops", {"n": 4}, 4), ("weak", {}, 1), ("strong", {}, 1)]:
        out = build_view(name, tiny_backbone, **opts)(img, sample_rng(0, 0))
        assert out.shape == (v, 3, 32, 32), (name, size)
        assert torch.isfinite(out).all()


def test_weak_strong_shapes_and_seeding(tiny_backbone):
    img = _img(64, 48)
    for name in ("weak", "strong"):
        view = build_view(name, tiny_backbone)
        a = view(img, sample_rng(0, 1))
        assert a.shape == (1, 3, 32, 32)
        assert torch.equal(a, view(img, sample_rng(0, 1)))
        outs = [view(img, sample_rng(s, 1)) for s in range(6)]
        assert any(not torch.equal(a, o) for o in outs[1:])
    # views draw from their own generator: torch's global RNG is untouched
    state = torch.random.get_rng_state()
    build_view("strong", tiny_backbone)(img, sample_rng(0, 1))
    assert torch.equal(state, torch.random.get_rng_state())


def test_view_config_tracks_parameters(tiny_backbone):
    def cfg(name, **kw):
        return build_view(name, tiny_backbone, **kw).config()

    base = cfg("crops", n=8, scale=(0.5, 0.9))
    assert base == cfg("crops", n=8, scale=[0.5, 0.9])
    assert base["n"] == 8 and tuple(base["scale"]) == (0.5, 0.9) and base["view"] == "crops"
    for changed in (cfg("crops", n=9), cfg("crops", scale=(0.4, 0.9)), cfg("crops", include_global=True)):
        assert changed != base
    assert cfg("weak") != cfg("weak", flip=False)
    assert cfg("strong") != cfg("strong", scale=(0.5, 1.0))
    assert cfg("strong") != cfg("strong", randaug_m=5)
    assert cfg("global") != base and "preprocess" in cfg("global")
    with pytest.raises(Exception, match="unknown view 'crop'"):
        build_view("crop", tiny_backbone)


def test_view_dataset_identical_across_worker_counts(tiny_backbone, colour_folder):
    ds = build_dataset(f"imagefolder:root={colour_folder}").subset(range(8))
    views = {"crops": build_view("crops", tiny_backbone, n=3), "weak": build_view("weak", tiny_backbone)}

    def collect(workers, epoch=0):
        vd = ViewDataset(ds, views, seed=11, epoch=epoch)
        batches = list(DataLoader(vd, batch_size=3, num_workers=workers))
        return {k: torch.cat([b["views"][k] for b in batches]) for k in views}, torch.cat(
            [b["index"] for b in batches]
        )

    ref, idx = collect(0)
    assert ref["crops"].shape == (8, 3, 3, 32, 32) and ref["weak"].shape == (8, 1, 3, 32, 32)
    assert idx.tolist() == list(range(8))
    par, _ = collect(2)
    for k in views:
        assert torch.equal(ref[k], par[k]), k
    other_epoch, _ = collect(0, epoch=1)
    assert not torch.equal(ref["crops"], other_epoch["crops"])


def test_square_crops_unchanged_by_the_ratio_option():
    """ratio=None draws exactly the square boxes (same RNG use); the view config, hence every
    feature-cache key of square crops, has no ratio entry."""
    rng = np.random.default_rng(3)
    s = rng.uniform(0.4, 0.8, size=6)
    side = np.maximum(1, np.round(s * 50)).astype(int)
    left = (rng.random(6) * (80 - side + 1)).astype(int)
    top = (rng.random(6) * (50 - side + 1)).astype(int)
    expected = np.stack([left, top, left + side, top + side], axis=1)
    assert np.array_equal(crop_boxes(80, 50, CropConfig(n=6, scale=(0.4, 0.8)), np.random.default_rng(3)), expected)


@pytest.mark.parametrize("w, h", [(64, 64), (200, 50), (37, 91)])
def test_rectangular_crop_boxes(w, h):
    cfg = CropConfig(n=800, scale=(0.4, 0.8), ratio=(0.5, 2.0))
    boxes = crop_boxes(w, h, cfg, np.random.default_rng(0))
    left, top, right, bottom = boxes.T
    bw, bh = right - left, bottom - top
    assert (left >= 0).all() and (top >= 0).all() and (right <= w).all() and (bottom <= h).all()
    assert (bw >= 1).all() and (bh >= 1).all()
    short = min(w, h)
    inside = (bw < w) & (bh < h)  # not capped by the image: the drawn area and ratio hold
    r = bw[inside] / bh[inside]
    assert r.min() >= 0.5 * 0.85 and r.max() <= 2.0 * 1.15
    area = bw[inside] * bh[inside] / short**2
    assert area.min() >= 0.4**2 * 0.8 and area.max() <= 0.8**2 * 1.2
    assert r.min() < 0.7 and r.max() > 1.4  # actually rectangular, both orientations
    with pytest.raises(ConfigError, match="crops.ratio"):
        CropConfig(ratio=(2.0, 0.5))


def test_rectangular_crop_is_the_whole_box_squashed(tiny_backbone):
    view = build_view("crops", tiny_backbone, n=4, scale=(0.3, 0.7), ratio=(0.5, 2.0))
    assert view.config()["ratio"] == (0.5, 2.0)
    assert "ratio" not in build_view("crops", tiny_backbone, n=4).config()
    img = _img(90, 60, seed=4)
    boxes = crop_boxes(img.width, img.height, view.cfg, sample_rng(2, 7))
    out = view(img, sample_rng(2, 7))
    size, resample, _, _ = view._fast
    for k, box in enumerate(boxes):
        squashed = img.crop(tuple(int(v) for v in box)).resize((size, size), resample)
        assert torch.equal(out[k], tiny_backbone.preprocess(squashed))
