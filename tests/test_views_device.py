"""Views made on the device (run here on CPU tensors): the same boxes, flips and RandAugment
operations as the PIL path, the same shapes, per-image randomness, determinism under a seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from labelless.data import build_dataset
from labelless.data.features import ViewDataset, extract_features, feature_cache_key
from labelless.errors import ConfigError
from labelless.methods.latteclip import ResizedCropView
from labelless.views import build_view, sample_rng
from labelless.views.device import (
    DecodedDataset,
    collate_decoded,
    device_view,
    make_views,
    resolve_views_on,
)


class _Images:
    """A minimal data set of fixed PIL images (index i -> images[i % len])."""

    def __init__(self, images, n=None):
        self.images, self.n = images, n or len(images)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"image": self.images[i % len(self.images)], "label": 0, "index": i}


def _gradient(w: int, h: int) -> tuple[Image.Image, float]:
    """R encodes x, G encodes y (``slope`` grey levels per pixel): a shifted or flipped box
    changes every pixel of a view, an interpolation difference almost none."""
    slope = min(255 / (w - 1), 255 / (h - 1), 2.0)
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * slope, yy * slope, np.full_like(xx, 128.0)], -1)
    return Image.fromarray(np.round(arr).astype(np.uint8)), slope


def _all_views(bb):
    # one dict in the order FAIR uses plus LaTTe-CLIP's view: the generator is shared, so the
    # draws must also come in the same order on both paths
    return {
        "weak": build_view("weak", bb),
        "crops": build_view("crops", bb, n=5, scale=(0.5, 0.9)),
        "strong": build_view("strong", bb, scale=(0.3, 1.0), randaug_n=2, randaug_m=9),
        "global": build_view("global", bb),
        "rrc": ResizedCropView(bb, (0.5, 1.0)),
    }


def _denorm(x: torch.Tensor, bb) -> torch.Tensor:
    mean = torch.tensor(bb.mean).view(3, 1, 1)
    std = torch.tensor(bb.std).view(3, 1, 1)
    return (x * std + mean) * 255


def _device_batch(ds, views, bb, idx):
    batch = collate_decoded([ds[i] for i in idx])
    return make_views(batch, views, "cpu")


@pytest.mark.parametrize("size", [(120, 90), (90, 120), (640, 400)])
def test_same_boxes_flips_and_ops_as_the_pil_path(tiny_backbone, size):
    """Each view of each image, made on both paths from the same seed, differs by well under
    half a stored pixel of the gradient plus 8-bit rounding (640x400 is reduced once by the
    loader: the boxes scale with it)."""
    img, slope = _gradient(*size)
    views = _all_views(tiny_backbone)
    dviews = {k: device_view(v, tiny_backbone) for k, v in views.items()}
    n = 12
    ds = DecodedDataset(_Images([img], n), dviews, seed=5)
    stored = min(ds[0]["pixels"].shape[1:])
    if size == (640, 400):
        assert stored < 400  # resized once, in the loader
    tol = 0.35 * slope * min(size) / stored + 0.3
    out = _device_batch(ds, dviews, tiny_backbone, range(n))
    for i in range(n):
        rng = sample_rng(5, i, 0)
        ref = {k: v(img, rng) for k, v in views.items()}  # ViewDataset's draw order
        for k in views:
            assert out[k][i].shape == ref[k].shape, k
            mad = float((_denorm(out[k][i], tiny_backbone) - _denorm(ref[k], tiny_backbone)).abs().mean())
            assert mad < tol, (k, i, mad)


def test_shapes_and_padding_do_not_leak(tiny_backbone):
    """Images of different sizes share a padded batch; each view equals the view made from
    that image alone."""
    imgs = [_gradient(70, 50)[0], _gradient(40, 64)[0], _gradient(33, 33)[0]]
    views = {k: device_view(v, tiny_backbone) for k, v in _all_views(tiny_backbone).items()}
    ds = DecodedDataset(_Images(imgs), views, seed=1)
    together = _device_batch(ds, views, tiny_backbone, range(3))
    s = tiny_backbone.image_size
    for k, v in views.items():
        assert together[k].shape == (3, v.num_views, 3, s, s) and together[k].dtype == torch.float32
    for i in range(3):
        alone = _device_batch(ds, views, tiny_backbone, [i])
        for k in views:
            torch.testing.assert_close(together[k][i], alone[k][0], atol=1e-4, rtol=0)


def test_per_image_randomness_and_seed_determinism(tiny_backbone):
    img, _ = _gradient(100, 80)
    views = {k: device_view(v, tiny_backbone) for k, v in _all_views(tiny_backbone).items()}

    def run(seed, epoch=0):
        ds = DecodedDataset(_Images([img], 6), views, seed=seed, epoch=epoch)
        return _device_batch(ds, views, tiny_backbone, range(6)), ds

    a, ds = run(0)
    b, _ = run(0)
    for k in views:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)  # same seed: identical
    # the same image at six indices: different random views, in one batch (the weak view has
    # few positions on a small image, so two of six may coincide)
    for k in ("weak", "crops", "strong", "rrc"):
        assert len(torch.unique(a[k].flatten(1), dim=0)) >= 4, k
    ops = np.stack([ds[i]["params"]["strong"]["ops"][0] for i in range(6)])
    assert len({tuple(r) for r in ops}) > 1  # RandAugment operations drawn per image
    torch.testing.assert_close(a["global"][0], a["global"][1])  # the centre view is not random
    for seed, epoch in ((1, 0), (0, 1)):
        c, _ = run(seed, epoch)
        assert not torch.equal(a["crops"], c["crops"]) and not torch.equal(a["strong"], c["strong"])


def test_loader_workers_do_not_change_the_views(tiny_backbone, colour_folder):
    ds0 = build_dataset(f"imagefolder:root={colour_folder}")
    views = {k: device_view(v, tiny_backbone) for k, v in _all_views(tiny_backbone).items()}
    ds = DecodedDataset(ds0, views, seed=2)
    got = []
    for workers in (0, 2):
        batches = DataLoader(ds, batch_size=5, num_workers=workers, collate_fn=DecodedDataset.collate_fn)
        got.append(torch.cat([make_views(b, views, "cpu")["strong"] for b in batches]))
    torch.testing.assert_close(got[0], got[1], atol=0, rtol=0)


def test_features_agree_and_cache_keys_differ(tiny_backbone, colour_folder, tmp_path):
    ds = build_dataset(f"imagefolder:root={colour_folder}")
    view = build_view("crops", tiny_backbone, n=3)
    k_cpu = feature_cache_key(tiny_backbone, view, ds, 0, False)
    k_dev = feature_cache_key(tiny_backbone, device_view(view, tiny_backbone), ds, 0, False)
    assert k_cpu != k_dev
    common = dict(batch_size=7, cache_dir=tmp_path / "cache", progress=False)
    cpu = extract_features(tiny_backbone, ds, view, views_on="cpu", **common)
    dev = extract_features(tiny_backbone, ds, view, views_on="device", **common)
    assert cpu.meta["cache_key"] == k_cpu and dev.meta["cache_key"] == k_dev
    assert dev.meta["view"]["views_on"] == "device" and "views_on" not in cpu.meta["view"]
    assert cpu.embeds.shape == dev.embeds.shape == (len(ds), 3, tiny_backbone.embed_dim)
    cos = (cpu.embeds * dev.embeds).sum(-1)
    assert float(cos.mean()) > 0.95
    again = extract_features(tiny_backbone, ds, view, views_on="device", **common)
    assert again.meta["encoded_here"] == 0  # read back from its own cache entry
    torch.testing.assert_close(again.embeds, dev.embeds)


def test_fair_trains_with_views_made_on_the_device(colour_folder, tmp_path):
    """One FAIR epoch per path from the same start: the device path sees the same crops, so
    the pseudo-labels and losses match the PIL path closely."""
    from labelless.backbones import load_backbone
    from labelless.config import from_dict
    from labelless.methods.base import FitContext, Runtime
    from labelless.methods.fair import FairConfig, build_fair

    rows = {}
    for path in ("cpu", "device"):
        train = build_dataset(f"imagefolder:root={colour_folder}")
        names = list(train.classnames)
        ctx = FitContext(
            backbone=load_backbone("openclip:labelless-tiny:random"), train=train, classnames=names,
            texts={c: [f"a {c} thing"] for c in names}, label_texts={c: [f"a photo of a {c}."] for c in names},
            rt=Runtime(device="cpu", progress=False, seed=3, views_on=path), out_dir=tmp_path / path,
        )
        cfg = from_dict(FairConfig, {"n_crops": 4, "k": 2, "optim": {"epochs": 1, "batch_size": 6, "lr": 1e-3}})
        trainer, loop = build_fair(ctx, cfg)
        assert (trainer.device_views is not None) == (path == "device")
        rows[path] = loop.run()[0]
    assert rows["device"]["pl_acc"] == rows["cpu"]["pl_acc"]
    assert rows["device"]["loss"] == pytest.approx(rows["cpu"]["loss"], rel=0.05)


def test_views_on_resolution_and_unsupported_views(tiny_backbone):
    assert resolve_views_on("auto", "cpu") == "cpu"
    assert resolve_views_on("auto", "cuda:1") == "device"
    assert resolve_views_on("cpu", "cuda") == "cpu"
    with pytest.raises(ConfigError, match="views_on"):
        resolve_views_on("gpu", "cpu")

    class Odd:
        name = "odd"

    with pytest.raises(ConfigError, match="--views-on cpu"):
        device_view(Odd(), tiny_backbone)


def test_view_dataset_and_decoded_dataset_share_labels_and_indices(tiny_backbone, colour_folder):
    ds0 = build_dataset(f"imagefolder:root={colour_folder}")
    view = build_view("global", tiny_backbone)
    a = ViewDataset(ds0, {"v": view})[4]
    b = DecodedDataset(ds0, {"v": device_view(view, tiny_backbone)})[4]
    assert (a["label"], a["index"]) == (b["label"], b["index"])


@pytest.mark.parametrize("method", ["coft", "coft+"])
def test_coft_trains_with_views_made_on_the_device(colour_folder, tmp_path, monkeypatch, method):
    """views_on=device: both phases' training steps get views cut by the device path (phase 2's
    MoCo key view too, for CoFT+), and the same seed gives the same model twice."""
    from labelless.backbones import load_backbone
    from labelless.config import from_dict
    from labelless.methods.base import FitContext, Runtime
    from labelless.methods.coft import CoFT, CoFTConfig, CoFTPlus, CoFTPlusConfig
    from labelless.views import device as device_mod

    made = []  # the view names of every batch the device path made
    real = device_mod.make_views

    def spy(batch, views, device):
        made.append(tuple(sorted(views)))
        return real(batch, views, device)

    monkeypatch.setattr(device_mod, "make_views", spy)
    cls, cfg_cls = (CoFT, CoFTConfig) if method == "coft" else (CoFTPlus, CoFTPlusConfig)
    params = {"n_ctx": 2, "vpt_tokens": 2, "collab_require": "either", "moco_queue": 8,
              "phase1": {"epochs": 1, "batch_size": 6}, "phase2": {"epochs": 1, "batch_size": 6}}
    heads = []
    for run in ("a", "b"):
        made.clear()
        train = build_dataset(f"imagefolder:root={colour_folder}")
        texts = {c: [f"a photo of a {c}."] for c in train.classnames}
        ctx = FitContext(backbone=load_backbone("openclip:labelless-tiny:random"), train=train,
                         classnames=train.classnames, texts=texts, label_texts=texts,
                         rt=Runtime(device="cpu", progress=False, seed=4, views_on="device"),
                         out_dir=tmp_path / run)
        fit = cls(from_dict(cfg_cls, params)).fit(ctx)
        assert ("img",) in made  # phase 1 (and phase 2 without MoCo)
        if method == "coft+":
            assert ("img", "key") in made and ("img",) in made  # phase 2 with its key view
        rows = [{k: v for k, v in h.items() if k != "time_s"} for h in fit.history]  # all but timings
        heads.append((fit.classifier.weight, fit.classifier.bias, rows))
    torch.testing.assert_close(heads[0][0], heads[1][0], rtol=0, atol=0)
    torch.testing.assert_close(heads[0][1], heads[1][1], rtol=0, atol=0)
    assert heads[0][2] == heads[1][2]


def test_coft_device_views_fall_back_to_pil_for_a_view_without_twin(tiny_backbone, lablog):
    from types import SimpleNamespace

    from labelless.methods.coft.method import device_views
    from labelless.views.device import DeviceView

    class Odd:
        name = "odd"

    weak = build_view("weak", tiny_backbone)
    ctx = SimpleNamespace(backbone=tiny_backbone, rt=SimpleNamespace(views_on="device"))
    made = device_views(ctx, {"img": weak})
    assert isinstance(made["img"], DeviceView) and made["img"].view is weak
    assert device_views(SimpleNamespace(backbone=tiny_backbone, rt=SimpleNamespace(views_on="cpu")), {"img": weak}) is None
    assert device_views(ctx, {"img": weak, "key": Odd()}) is None
    assert "key=odd" in lablog.text and "no device path" in lablog.text
