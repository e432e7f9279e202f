"""Views made on the device: the loader decodes, the accelerator cuts the views.

The PIL path (:class:`labelless.data.features.ViewDataset`) makes every view in the DataLoader
workers: crop, resize, RandAugment, float conversion and normalisation of ``V`` views per image
on the CPU. Here the workers only decode each image once, resize it once (its short side is
bounded by :meth:`DeviceView.max_short`, the size below which a view would lose detail) and draw
each view's parameters; the batch reaches the device as ``uint8`` and
:func:`make_views` cuts all views of all images there, batched: one
:func:`torchvision.ops.roi_align` crop-and-resize per view kind, flips and RandAugment with
per-image randomness (grouped by operation, :mod:`torchvision.transforms.v2.functional`).
On a CPU run the same code runs on CPU tensors.

The parameters are drawn exactly as the PIL twin draws them: from the same per-sample
generator (``sample_rng(seed, index, epoch)``), in the same order, with the same calls (for the
torchvision views, torch's RNG seeded the same way and torchvision's own ``get_params``). So a
seed gives the same crop boxes, flips and RandAugment operations on both paths; the pixels
differ only by interpolation (``roi_align`` is bilinear with adaptive supersampling, the PIL
path uses the backbone's resampling filter).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from labelless.errors import ConfigError
from labelless.utils.lazy import lazy_module
from labelless.views import (
    GlobalView,
    RandomCropsView,
    StrongView,
    View,
    WeakView,
    crop_boxes,
    sample_rng,
)

if TYPE_CHECKING:
    from labelless.backbones.base import Backbone

T = lazy_module("torchvision.transforms")  # imported on first use: see labelless.utils.lazy
F2 = lazy_module("torchvision.transforms.v2.functional")

#: ``--views-on`` values: ``device`` (this module), ``cpu`` (the PIL reference path) and ``auto``
#: (``device`` when the run's device is CUDA, else ``cpu``).
VIEWS_ON = ("auto", "device", "cpu")

_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # torchvision's RandomResizedCrop default aspect ratios


def resolve_views_on(views_on: str, device: str | torch.device) -> str:
    """``auto`` -> ``device`` on CUDA, ``cpu`` elsewhere; ``device``/``cpu`` unchanged."""
    if views_on not in VIEWS_ON:
        raise ConfigError(f"views_on must be one of {', '.join(VIEWS_ON)}, got '{views_on}'")
    if views_on == "auto":
        return "device" if torch.device(device).type == "cuda" else "cpu"
    return views_on


def _shape(w: int, h: int) -> torch.Tensor:
    """A stand-in image of size ``(w, h)`` for torchvision's ``get_params`` (no memory)."""
    return torch.empty((1, 1, 1)).expand(3, h, w)


def _resized_shortest(w: int, h: int, size: int) -> tuple[int, int]:
    """``(w', h')`` of torchvision's ``Resize(size)`` (shorter side -> size)."""
    if w <= h:
        return size, int(size * h / w)
    return int(size * w / h), size


class DeviceView:
    """The device twin of a PIL :class:`~labelless.views.View`.

    ``draw(w, h, rng)`` runs in the loader (per image, numpy) and returns the view's parameters
    in the original image's pixel coordinates: ``boxes (V, 4)`` float ``(left, top, right,
    bottom)``, ``flip (V,)`` bool, ``ops (V, K)`` RandAugment operation indices and ``neg (V, K)``
    their signs (K = 0 without RandAugment). :func:`make_views` renders them.
    """

    def __init__(self, view: View, backbone: Backbone, *, randaug: tuple[int, int] | None = None):
        self.view = view
        self.name = view.name
        self.num_views = getattr(view, "num_views", 1)
        self.size = int(backbone.image_size)
        self.mean = tuple(float(m) for m in backbone.mean)
        self.std = tuple(float(s) for s in backbone.std)
        self.randaug = randaug if randaug and randaug[0] > 0 else None
        self.can_flip = False
        self._ops: list[tuple[str, float, bool]] = []
        if self.randaug:
            space = T.RandAugment(num_ops=randaug[0], magnitude=randaug[1])._augmentation_space(
                31, (self.size, self.size)
            )
            self._ops = [
                (name, float(mags[randaug[1]]) if mags.ndim > 0 else 0.0, bool(signed))
                for name, (mags, signed) in space.items()
            ]

    def config(self) -> dict[str, Any]:
        """The PIL twin's config plus the path: part of every feature-cache key."""
        return {**self.view.config(), "views_on": "device", "max_short": self.max_short()}

    def min_side(self) -> float:
        """The smallest view side, as a fraction of the image's short side."""
        return 1.0

    def max_short(self) -> int:
        """The short side the loader keeps: beyond it no view gains detail at ``size``."""
        return int(math.ceil(self.size / self.min_side()))

    def draw(self, w: int, h: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _params(self, boxes, flip=None, ops=None, neg=None) -> dict[str, np.ndarray]:
        v = len(boxes)
        k = self.randaug[0] if self.randaug else 0
        return {
            "boxes": np.asarray(boxes, dtype=np.float32).reshape(v, 4),
            "flip": np.zeros(v, bool) if flip is None else np.asarray(flip, bool).reshape(v),
            "ops": np.zeros((v, k), np.int64) if ops is None else np.asarray(ops, np.int64).reshape(v, k),
            "neg": np.zeros((v, k), bool) if neg is None else np.asarray(neg, bool).reshape(v, k),
        }

    def _draw_randaug(self) -> tuple[list[int], list[bool]]:
        """RandAugment's draws from torch's global RNG, in ``T.RandAugment.forward``'s order."""
        ops, neg = [], []
        for _ in range(self.randaug[0]):
            i = int(torch.randint(len(self._ops), (1,)).item())
            _, mag, signed = self._ops[i]
            ops.append(i)
            neg.append(bool(torch.randint(2, (1,)).item()) if signed else False)
        return ops, neg


class CenterDeviceView(DeviceView):
    """Twin of ``global``: the backbone's eval resize + centre crop as one box."""

    def __init__(self, view: GlobalView, backbone: Backbone):
        super().__init__(view, backbone)
        pp = dict(getattr(backbone, "preprocess_cfg", {}) or {})
        self.mode = pp.get("resize_mode", "shortest")
        if self.mode not in ("shortest", "squash"):
            raise ConfigError(
                f"the backbone's eval preprocessing (resize_mode={self.mode}) has no device twin; "
                "use --views-on cpu"
            )
        self.resize = int(pp.get("resize", self.size))

    def draw(self, w, h, rng):
        if self.mode == "squash":
            return self._params([[0, 0, w, h]])
        rw, rh = _resized_shortest(w, h, self.resize)
        top, left = int(round((rh - self.size) / 2.0)), int(round((rw - self.size) / 2.0))
        sx, sy = w / rw, h / rh
        box = [max(0.0, left * sx), max(0.0, top * sy), min(w, (left + self.size) * sx), min(h, (top + self.size) * sy)]
        return self._params([box])


class CropsDeviceView(DeviceView):
    """Twin of ``crops``: the same :func:`crop_boxes` (and the centre box as view 0 if asked)."""

    def __init__(self, view: RandomCropsView, backbone: Backbone):
        super().__init__(view, backbone)
        self.cfg = view.cfg
        self.center = CenterDeviceView(GlobalView(backbone), backbone) if view.cfg.include_global else None

    def min_side(self):
        return float(self.cfg.scale[0])

    def draw(self, w, h, rng):
        boxes = crop_boxes(w, h, self.cfg, rng).astype(np.float32)
        if self.center is not None:
            boxes = np.concatenate([self.center.draw(w, h, rng)["boxes"], boxes])
        return self._params(boxes)


class ResizedCropDeviceView(DeviceView):
    """Twin of ``weak`` (Resize + RandomCrop + flip), ``strong`` (RandomResizedCrop + flip +
    RandAugment) and LaTTe-CLIP's ``rrc`` (RandomResizedCrop)."""

    def __init__(self, view: View, backbone: Backbone, *, kind: str, scale=(1.0, 1.0), flip=True,
                 randaug=None, seed_high: int = 2**63 - 1):
        super().__init__(view, backbone, randaug=randaug)
        self.kind, self.scale, self.flip, self.seed_high = kind, tuple(scale), bool(flip), seed_high
        self.can_flip = self.flip

    def min_side(self):
        if self.kind == "crop":
            return 1.0
        return math.sqrt(self.scale[0] * _RATIO[0])  # the shortest side RandomResizedCrop can pick

    def draw(self, w, h, rng):
        seed = int(rng.integers(0, self.seed_high))  # as the PIL twin seeds torch's RNG
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if self.kind == "crop":  # Resize(S) then RandomCrop(S), mapped back to the original
                rw, rh = _resized_shortest(w, h, self.size)
                i, j, hh, ww = T.RandomCrop.get_params(_shape(rw, rh), (self.size, self.size))
                sx, sy = w / rw, h / rh
                box = [j * sx, i * sy, (j + ww) * sx, (i + hh) * sy]
            else:
                i, j, hh, ww = T.RandomResizedCrop.get_params(_shape(w, h), list(self.scale), list(_RATIO))
                box = [j, i, j + ww, i + hh]
            flip = bool(torch.rand(1) < 0.5) if self.flip else False
            ops, neg = self._draw_randaug() if self.randaug else (None, None)
        return self._params([box], [flip], ops, neg)


def device_view(view: View, backbone: Backbone) -> DeviceView:
    """The device twin of a PIL view (``global``, ``crops``, ``weak``, ``strong``, ``rrc``).

    Raises:
        ConfigError: the view has no device twin (e.g. ``sam``); use ``--views-on cpu``.
    """
    if isinstance(view, DeviceView):
        return view
    if isinstance(view, GlobalView):
        return CenterDeviceView(view, backbone)
    if isinstance(view, RandomCropsView):
        return CropsDeviceView(view, backbone)
    if isinstance(view, WeakView):
        return ResizedCropDeviceView(view, backbone, kind="crop", flip=view.cfg["flip"])
    if isinstance(view, StrongView):
        return ResizedCropDeviceView(view, backbone, kind="rrc", scale=view.cfg["scale"],
                                     randaug=(view.cfg["randaug_n"], view.cfg["randaug_m"]))
    if getattr(view, "name", "") == "rrc" and hasattr(view, "scale"):  # LaTTe-CLIP's training view
        return ResizedCropDeviceView(view, backbone, kind="rrc", scale=view.scale, flip=False,
                                     seed_high=2**31 - 1)
    raise ConfigError(f"view '{getattr(view, 'name', view)}' has no device path; use --views-on cpu")


def has_device_twin(view: View) -> bool:
    return isinstance(view, (DeviceView, GlobalView, RandomCropsView, WeakView, StrongView)) or (
        getattr(view, "name", "") == "rrc" and hasattr(view, "scale")
    )


# ----------------------------------------------------------------------------------- loader


class DecodedDataset(Dataset):
    """Item ``i``: image ``i`` decoded once, resized once, as ``uint8 (3, h, w)``, with every
    view's parameters (boxes scaled to the stored size). Batch it with :func:`collate_decoded`.

    The short side is reduced to the largest :meth:`DeviceView.max_short` of the views (never
    enlarged), so no view loses detail and a large photo does not travel at full size.
    """

    def __init__(self, base, views: Mapping[str, DeviceView], seed: int = 0, epoch: int = 0):
        self.base = base.with_transform(None) if hasattr(base, "with_transform") else base
        self.views = dict(views)
        self.seed, self.epoch = seed, epoch
        self.max_short = max(v.max_short() for v in self.views.values())

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = self.base[i]
        img: Image.Image = item["image"]
        w, h = img.size
        rng = sample_rng(self.seed, item["index"], self.epoch)
        params = {name: v.draw(w, h, rng) for name, v in self.views.items()}
        if min(w, h) > self.max_short:
            k = self.max_short / min(w, h)
            img = img.resize((max(1, round(w * k)), max(1, round(h * k))), Image.BICUBIC, reducing_gap=3.0)
            sx, sy = img.width / w, img.height / h
            for p in params.values():
                p["boxes"] = p["boxes"] * np.array([sx, sy, sx, sy], np.float32)
        pixels = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1)  # (3, h, w)
        return {"pixels": pixels, "params": params, "label": item["label"], "index": item["index"]}


def collate_decoded(items: list[dict]) -> dict:
    """Pad to the batch's largest image (edge-replicated, so bilinear sampling at a border
    never blends in padding): ``pixels (B, 3, H, W)`` uint8, ``params[name][key] (B, V, ...)``."""
    hmax = max(it["pixels"].shape[1] for it in items)
    wmax = max(it["pixels"].shape[2] for it in items)
    pixels = torch.empty((len(items), 3, hmax, wmax), dtype=torch.uint8)
    for b, it in enumerate(items):
        p = it["pixels"]
        _, h, w = p.shape
        pixels[b, :, :h, :w] = p
        if w < wmax:
            pixels[b, :, :h, w:] = p[:, :, w - 1 :]
        if h < hmax:
            pixels[b, :, h:, :] = pixels[b, :, h - 1 : h, :]
    params = {
        name: {k: torch.from_numpy(np.stack([it["params"][name][k] for it in items])) for k in items[0]["params"][name]}
        for name in items[0]["params"]
    }
    return {
        "pixels": pixels,
        "params": params,
        "label": torch.as_tensor([it["label"] for it in items], dtype=torch.long),
        "index": torch.as_tensor([it["index"] for it in items], dtype=torch.long),
    }


DecodedDataset.collate_fn = staticmethod(collate_decoded)


# ----------------------------------------------------------------------------------- device


def _roi(x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Crop-and-resize every box: ``x (B, C, H, W)``, ``boxes (B, V, 4)`` -> ``(B*V, C, S, S)``."""
    b, v = boxes.shape[:2]
    idx = torch.arange(b, device=x.device, dtype=x.dtype).repeat_interleave(v)[:, None]  # (B*V, 1)
    rois = torch.cat([idx, boxes.reshape(b * v, 4).to(x.dtype)], dim=1)  # (B*V, 5)
    # aligned=True: box edges are pixel edges (PIL's crop convention); sampling_ratio=-1 averages
    # ceil(box/S)^2 bilinear samples per output pixel, an area filter when shrinking.
    # imported here: torchvision.ops imports torch._dynamo (a second), which `labelless list` avoids
    from torchvision.ops import roi_align

    return roi_align(x, rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def _apply_op(img: torch.Tensor, name: str, mag: float) -> torch.Tensor:
    """One RandAugment operation on ``uint8 (n, 3, S, S)``, as ``T.RandAugment`` applies it."""
    if name == "ShearX":
        return F2.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[math.degrees(math.atan(mag)), 0.0],
                         interpolation=T.InterpolationMode.NEAREST, center=[0, 0])
    if name == "ShearY":
        return F2.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, math.degrees(math.atan(mag))],
                         interpolation=T.InterpolationMode.NEAREST, center=[0, 0])
    if name == "TranslateX":
        return F2.affine(img, angle=0.0, translate=[int(mag), 0], scale=1.0, shear=[0.0, 0.0], interpolation=T.InterpolationMode.NEAREST)
    if name == "TranslateY":
        return F2.affine(img, angle=0.0, translate=[0, int(mag)], scale=1.0, shear=[0.0, 0.0], interpolation=T.InterpolationMode.NEAREST)
    if name == "Rotate":
        return F2.rotate(img, mag, interpolation=T.InterpolationMode.NEAREST)
    if name == "Brightness":
        return F2.adjust_brightness(img, 1.0 + mag)
    if name == "Color":
        return F2.adjust_saturation(img, 1.0 + mag)
    if name == "Contrast":
        return F2.adjust_contrast(img, 1.0 + mag)
    if name == "Sharpness":
        return F2.adjust_sharpness(img, 1.0 + mag)
    if name == "Posterize":
        return F2.posterize(img, int(mag))
    if name == "Solarize":
        return F2.solarize(img, mag)
    if name == "AutoContrast":
        return F2.autocontrast(img)
    if name == "Equalize":
        return F2.equalize(img)
    if name == "Identity":
        return img
    raise ValueError(f"unknown RandAugment operation {name}")


def _randaug(img: torch.Tensor, view: DeviceView, ops: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Per-image RandAugment on ``uint8 (n, 3, S, S)``: each of the K slots applies, to every
    group of images that drew the same (operation, sign), that operation batched."""
    ops, neg = ops.cpu(), neg.cpu()  # (n, K): the grouping is host-side bookkeeping
    for k in range(ops.shape[1]):
        for key in torch.unique(ops[:, k] * 2 + neg[:, k].long()).tolist():
            op, sign = divmod(key, 2)
            sel = ((ops[:, k] == op) & (neg[:, k].long() == sign)).nonzero().flatten().to(img.device)
            name, mag, _ = view._ops[op]
            img[sel] = _apply_op(img[sel], name, -mag if sign else mag)
    return img


@torch.no_grad()
def render(view: DeviceView, x: torch.Tensor, params: Mapping[str, torch.Tensor],
           normed: torch.Tensor | None = None) -> torch.Tensor:
    """All views of one kind for a batch: ``x (B, 3, H, W)`` float 0..255 on the device ->
    ``(B, V, 3, S, S)`` float, normalised with the backbone's mean and std.

    normed: ``x`` already normalised (shared between the views of a batch); crop-and-resize is
        linear, so normalising the small stored image equals normalising every view.
    """
    boxes = params["boxes"].to(x.device, non_blocking=True)  # (B, V, 4)
    b, v = boxes.shape[:2]
    s = view.size
    flip = params["flip"].reshape(b * v).to(x.device)
    mean = torch.tensor(view.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(view.std, device=x.device).view(1, 3, 1, 1)
    if view.randaug is None:
        if normed is None:
            normed = (x / 255.0 - mean) / std
        y = _roi(normed, boxes, s)  # (B*V, 3, S, S)
        if view.can_flip:
            y = torch.where(flip.view(-1, 1, 1, 1), y.flip(-1), y)
    else:  # RandAugment works on 8-bit images, as in the PIL pipeline
        y = _roi(x, boxes, s).round_().clamp_(0, 255).to(torch.uint8)
        if view.can_flip:
            y = torch.where(flip.view(-1, 1, 1, 1), y.flip(-1), y)
        y = _randaug(y, view, params["ops"].reshape(b * v, -1), params["neg"].reshape(b * v, -1))
        y = (y.float() / 255.0 - mean) / std
    return y.view(b, v, 3, s, s)


def make_views(batch: Mapping, views: Mapping[str, DeviceView], device) -> dict[str, torch.Tensor]:
    """Every view of a :func:`collate_decoded` batch, made on ``device``: ``{name: (B, V, 3, S, S)}``."""
    x = batch["pixels"].to(device, non_blocking=True).float()  # (B, 3, H, W), 0..255
    out, normed = {}, {}
    for name, view in views.items():
        key = (view.mean, view.std)
        if view.randaug is None and key not in normed:
            mean = torch.tensor(view.mean, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(view.std, device=x.device).view(1, 3, 1, 1)
            normed[key] = (x / 255.0 - mean) / std
        out[name] = render(view, x, batch["params"][name], normed.get(key))
    return out


def materialize(batch: Mapping, views: Mapping[str, DeviceView] | None, device) -> Mapping:
    """A training batch with ``batch["views"]``: unchanged from the PIL path, made here from a
    decoded batch (``views`` are its device views)."""
    if "views" in batch or views is None:
        return batch
    return {**batch, "views": make_views(batch, views, device)}


__all__ = [
    "VIEWS_ON", "DeviceView", "CenterDeviceView", "CropsDeviceView", "ResizedCropDeviceView",
    "DecodedDataset", "collate_decoded", "device_view", "has_device_twin", "make_views",
    "materialize", "render", "resolve_views_on",
]
