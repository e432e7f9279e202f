"""Views: how an image becomes the tensors a method looks at.

A view maps one PIL image to a ``(V, 3, S, S)`` tensor, normalised with the backbone's own
preprocessing: ``global`` (V=1, the backbone's eval transform), ``crops`` (V=N WCA-style random
square crops), ``weak`` and ``strong`` augmentations (torchvision). Randomness is drawn from a
per-sample generator seeded by ``(seed, epoch, index)``, so crops are identical whatever the
number of DataLoader workers, and a view's :meth:`config` (with the seed) is part of every
feature-cache key.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from labelless.errors import ConfigError
from labelless.registry import VIEWS
from labelless.utils.lazy import lazy_module

T = lazy_module("torchvision.transforms")  # imported on first use: see labelless.utils.lazy


class View:
    """Base class: ``view(img, rng) -> (V, 3, S, S)``; ``config()`` identifies it for caches."""

    name = ""
    num_views = 1

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> torch.Tensor:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {"view": self.name}


@VIEWS.register("global")
class GlobalView(View):
    """The whole image through the backbone's eval preprocessing (V=1)."""

    name = "global"

    def __init__(self, backbone: Backbone, **_):
        self.preprocess = backbone.preprocess
        self.pp = dict(getattr(backbone, "preprocess_cfg", {}))

    def __call__(self, img, rng):
        return self.preprocess(img).unsqueeze(0)

    def config(self):
        return {"view": self.name, "preprocess": self.pp}


@dataclass(frozen=True)
class CropConfig:
    """WCA-style random crops.

    n: number of crops per image.
    scale: (a, b); each crop is a square of side ``s * min(H, W)`` with ``s ~ U(a, b)`` at a
        uniformly random position (WCA's code and docs/methods/zeroshot.md: a side fraction, not an area).
    include_global: prepend the global view as view 0 (then V = n + 1).
    ratio: None (square crops, the default) or ``(r0, r1)``: rectangular crops of the same area
        ``(s * min(H, W))^2`` with aspect ratio ``w / h = exp(U(log r0, log r1))`` (torchvision's
        RandomResizedCrop draw), each side capped at the image's.
    """

    n: int = 8
    scale: tuple[float, float] = (0.5, 0.9)
    include_global: bool = False
    ratio: tuple[float, float] | None = None

    def __post_init__(self):
        if self.n < 1:
            raise ConfigError(f"crops.n must be >= 1, got {self.n}")
        a, b = self.scale
        if not 0 < a <= b <= 1:
            raise ConfigError(f"crops.scale must satisfy 0 < a <= b <= 1, got {self.scale}")
        if self.ratio is not None and not (len(self.ratio) == 2 and 0 < self.ratio[0] <= self.ratio[1]):
            raise ConfigError(f"crops.ratio must be (r0, r1) with 0 < r0 <= r1, or none; got {self.ratio}")


def crop_boxes(width: int, height: int, cfg: CropConfig, rng: np.random.Generator) -> np.ndarray:
    """``(n, 4)`` integer boxes ``(left, top, right, bottom)`` of random square crops, or
    rectangular ones of the same area when ``cfg.ratio`` is set."""
    short = min(width, height)
    s = rng.uniform(cfg.scale[0], cfg.scale[1], size=cfg.n)
    if cfg.ratio is None:
        w = h = np.maximum(1, np.round(s * short)).astype(int)
    else:
        r = np.exp(rng.uniform(math.log(cfg.ratio[0]), math.log(cfg.ratio[1]), size=cfg.n))
        side = s * short
        w = np.clip(np.round(side * np.sqrt(r)), 1, width).astype(int)
        h = np.clip(np.round(side / np.sqrt(r)), 1, height).astype(int)
    left = (rng.random(cfg.n) * (width - w + 1)).astype(int)
    top = (rng.random(cfg.n) * (height - h + 1)).astype(int)
    return np.stack([left, top, left + w, top + h], axis=1)


@VIEWS.register("crops")
class RandomCropsView(View):
    """N random square crops, side ~ U(a, b) * min(H, W), each resized to the model input
    (``ratio=(r0, r1)``: rectangles of the same area, squashed whole to the model input)."""

    name = "crops"

    def __init__(self, backbone: Backbone, n: int = 8, scale=(0.5, 0.9), include_global: bool = False,
                 ratio=None, **_):
        ratio = None if ratio is None else tuple(float(v) for v in ratio)
        self.cfg = CropConfig(int(n), tuple(float(v) for v in scale), bool(include_global), ratio)
        self.preprocess = backbone.preprocess
        self.pp = dict(getattr(backbone, "preprocess_cfg", {}))
        self.num_views = self.cfg.n + int(self.cfg.include_global)
        self._fast = _square_resize_params(backbone)
        self.size = int(backbone.image_size)

    def __call__(self, img, rng):
        boxes = crop_boxes(img.width, img.height, self.cfg, rng)
        views = [self.preprocess(img).unsqueeze(0)] if self.cfg.include_global else []
        if self._fast is not None:
            # Same pixels as ``preprocess(img.crop(box))`` (a square crop resized to S x S and
            # normalised), without the per-crop transform pipeline: one tensor conversion and
            # one normalisation for all crops. A rectangular crop is squashed to S x S whole
            # (as RandomResizedCrop does), not centre-cropped to a square.
            size, resample, mean, std = self._fast
            crops = [
                np.asarray(img.crop(tuple(int(v) for v in box)).resize((size, size), resample))
                for box in boxes
            ]
            x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div_(255)
            views.append(x.sub_(mean).div_(std))
        else:
            def crop(box):
                c = img.crop(tuple(int(v) for v in box))
                if self.cfg.ratio is not None:  # the whole rectangle, squashed to S x S
                    c = c.resize((self.size, self.size), Image.BICUBIC)
                return self.preprocess(c)

            views.append(torch.stack([crop(box) for box in boxes]))
        return torch.cat(views)

    def config(self):
        cfg = asdict(self.cfg)
        if cfg["ratio"] is None:
            del cfg["ratio"]  # square crops keep the cache keys they had before the option
        return {"view": self.name, **cfg, "preprocess": self.pp}


class _TorchvisionView(View):
    """A torchvision augmentation pipeline, seeded per sample through torch's RNG."""

    def __init__(self, backbone: Backbone, transform: T.Compose, cfg: dict):
        self.transform = transform
        self.cfg = cfg
        self.pp = dict(getattr(backbone, "preprocess_cfg", {}))

    def __call__(self, img, rng):
        seed = int(rng.integers(0, 2**63 - 1))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(img).unsqueeze(0)

    def config(self):
        return {"view": self.name, **self.cfg, "preprocess": self.pp}


@VIEWS.register("weak")
class WeakView(_TorchvisionView):
    """Weak augmentation: resize, random crop and horizontal flip (DPA/MUST weak view)."""

    name = "weak"

    def __init__(self, backbone: Backbone, flip: bool = True, **_):
        s = backbone.image_size
        tf = [T.Resize(s, interpolation=_interp(backbone)), T.RandomCrop(s)]
        if flip:
            tf.append(T.RandomHorizontalFlip())
        tf += [T.ToTensor(), T.Normalize(backbone.mean, backbone.std)]
        super().__init__(backbone, T.Compose(tf), {"flip": bool(flip)})


@VIEWS.register("strong")
class StrongView(_TorchvisionView):
    """Strong augmentation: RandomResizedCrop, flip and RandAugment (DPA/MUST strong view)."""

    name = "strong"

    def __init__(self, backbone: Backbone, scale=(0.3, 1.0), randaug_n: int = 2, randaug_m: int = 9, **_):
        s = backbone.image_size
        scale = tuple(float(v) for v in scale)
        tf = T.Compose([
            T.RandomResizedCrop(s, scale=scale, interpolation=_interp(backbone)),
            T.RandomHorizontalFlip(),
            T.RandAugment(num_ops=int(randaug_n), magnitude=int(randaug_m)),
            T.ToTensor(),
            T.Normalize(backbone.mean, backbone.std),
        ])
        super().__init__(backbone, tf, {"scale": scale, "randaug_n": int(randaug_n), "randaug_m": int(randaug_m)})


_PIL_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


def _square_resize_params(backbone: Backbone):
    """``(S, PIL resample, mean, std)`` when the backbone's eval preprocessing of a *square*
    image is exactly "resize to S x S, to tensor, normalise" (open_clip ``shortest``/``squash``
    with a square size; HF with resize == crop); else None (use the preprocess per crop)."""
    pp = dict(getattr(backbone, "preprocess_cfg", {}) or {})
    size = pp.get("size")
    if isinstance(size, (tuple, list)):
        if len(size) != 2 or size[0] != size[1]:
            return None
        size = size[0]
    if not isinstance(size, int) or size != getattr(backbone, "image_size", None):
        return None
    if pp.get("mode", "RGB") != "RGB" or pp.get("resize_mode", "shortest") not in ("shortest", "squash"):
        return None
    if "resize" in pp and pp["resize"] != size:
        return None
    interp = pp.get("interpolation", "bicubic")
    interp = getattr(interp, "value", interp)
    if interp not in _PIL_RESAMPLE:
        return None
    mean = torch.tensor(backbone.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std, dtype=torch.float32).view(1, 3, 1, 1)
    return size, _PIL_RESAMPLE[interp], mean, std


def _interp(backbone: Backbone) -> T.InterpolationMode:
    mode = getattr(backbone, "interpolation", "bicubic")
    if isinstance(mode, T.InterpolationMode):
        return mode
    return {"bilinear": T.InterpolationMode.BILINEAR, "nearest": T.InterpolationMode.NEAREST}.get(
        str(mode), T.InterpolationMode.BICUBIC
    )


def build_view(name: str, backbone: Backbone, **opts) -> View:
    """Instantiate the registered view ``name`` for ``backbone``."""
    return VIEWS.get(name)(backbone, **opts)


def sample_rng(seed: int, index: int, epoch: int = 0) -> np.random.Generator:
    """The per-sample generator: identical for a (seed, epoch, index) in any worker."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


__all__ = [
    "View", "GlobalView", "RandomCropsView", "WeakView", "StrongView", "CropConfig",
    "crop_boxes", "build_view", "sample_rng",
]


from labelless.views import sam as _sam  # noqa: E402,F401  (registers the 'sam' view)

if TYPE_CHECKING:
    from labelless.backbones.base import Backbone
