"""SAM mask regions as a view (region-probe's second region source; docs/methods/region-probe.md).

Segment Anything proposes masks for a grid of point prompts (automatic mask generation); each
kept mask becomes a region image: the mask's bounding box cropped from the image with the
pixels outside the mask filled (``fill``: ``mean`` = the backbone's mean colour, ``black``, or
``none`` = keep the box as it is). Masks are filtered by area ratio (mask pixels / image pixels)
and the highest-scoring ``n`` are kept, so SAM regions and random crops share the same maximum
region count and area range, as the paper requires.

SAM comes from Hugging Face transformers (an optional extra, imported lazily). Weights are a
``SamModel`` id or local folder (e.g. ``facebook/sam-vit-base``, the paper's SAM ViT-B), or an
in-memory ``(SamModel, SamImageProcessor)`` pair (tests use a tiny random one).

The view has a fixed size ``(n, 3, S, S)`` so it batches and caches like any view; an image
with fewer than ``n`` masks is padded with all-zero tensors (a uniform mean-colour image after
normalisation). :func:`valid_regions` recovers which rows are real from the features, by
comparing with the embedding of that padding image (:func:`pad_embedding`).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from labelless.errors import ConfigError
from labelless.registry import VIEWS
from labelless.views import View

if TYPE_CHECKING:
    from labelless.backbones.base import Backbone

FILLS = ("mean", "black", "none")


# --------------------------------------------------------------------------- mask -> region image
def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(left, top, right, bottom)`` (right/bottom exclusive) of a ``(H, W)`` bool mask; None if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def mask_to_region(
    img: Image.Image, mask: np.ndarray, fill: str = "mean", mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
) -> Image.Image:
    """The region image of a mask: its bounding box, outside-mask pixels filled.

    img: RGB PIL image ``(H, W)``; mask: ``(H, W)`` bool; fill: ``mean`` (the colour ``mean``,
    in [0, 1], e.g. the backbone's normalisation mean, so filled pixels normalise to ~0),
    ``black`` or ``none`` (plain box crop). Raises ValueError on an empty mask.
    """
    if fill not in FILLS:
        raise ValueError(f"fill must be one of {FILLS}, got {fill!r}")
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (img.height, img.width):
        raise ValueError(f"mask shape {mask.shape} != image (H, W) {(img.height, img.width)}")
    box = mask_bbox(mask)
    if box is None:
        raise ValueError("empty mask has no region")
    left, top, right, bottom = box
    arr = np.asarray(img.convert("RGB"))[top:bottom, left:right].copy()  # (h, w, 3)
    if fill != "none":
        colour = np.zeros(3, np.uint8) if fill == "black" else np.round(np.asarray(mean) * 255).astype(np.uint8)
        arr[~mask[top:bottom, left:right]] = colour
    return Image.fromarray(arr)


def select_masks(
    masks: np.ndarray, scores: np.ndarray, n: int, area: tuple[float, float]
) -> list[int]:
    """Indices of the (at most ``n``) best-scoring masks whose area ratio lies in ``area``.

    masks ``(M, H, W)`` bool, scores ``(M,)`` -> indices in descending score order.
    """
    if len(masks) == 0:
        return []
    ratio = masks.reshape(len(masks), -1).mean(axis=1)  # (M,)
    ok = np.nonzero((ratio >= area[0]) & (ratio <= area[1]))[0]
    order = ok[np.argsort(-np.asarray(scores)[ok], kind="stable")]
    return [int(i) for i in order[:n]]


# --------------------------------------------------------------------------- automatic masks
@dataclass(frozen=True)
class SamConfig:
    """Automatic mask generation (defaults follow SAM's / transformers' pipeline defaults).

    points_per_side: the point-prompt grid is ``points_per_side**2`` (SAM: 32; ours 16 for CPU).
    points_per_batch: prompts decoded per forward.
    pred_iou_thresh: keep masks whose predicted IoU >= this (SAM: 0.88).
    stability_thresh: keep masks whose stability score >= this (SAM: 0.95).
    stability_offset: logit offset of the stability score (SAM: 1.0).
    nms_thresh: box IoU of non-maximum suppression between masks (SAM: 0.7).
    """

    points_per_side: int = 16
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_thresh: float = 0.95
    stability_offset: float = 1.0
    nms_thresh: float = 0.7

    def __post_init__(self):
        if self.points_per_side < 1 or self.points_per_batch < 1:
            raise ConfigError("sam: points_per_side and points_per_batch must be >= 1")


def _import_sam():
    try:
        from transformers import SamImageProcessor, SamModel
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "SAM regions need Hugging Face transformers with SAM support: pip install 'labelless[sam]' "
            f"(or transformers>=4.29) ({e})"
        ) from None
    return SamModel, SamImageProcessor


def load_sam(spec: str, device: str = "cpu"):
    """``(SamModel, SamImageProcessor)`` from a hub id or local folder (lazy transformers import)."""
    SamModel, SamImageProcessor = _import_sam()
    try:
        model = SamModel.from_pretrained(spec).to(device).eval()
        processor = SamImageProcessor.from_pretrained(spec)
    except OSError as e:
        raise ConfigError(f"cannot load SAM weights '{spec}': {e}") from None
    return model, processor


def model_digest(model: torch.nn.Module) -> str:
    """sha256 (16 hex) of a module's parameter names, shapes and values (cache identity)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class SamMaskGenerator:
    """Automatic mask generation with a ``SamModel``: grid prompts -> filtered, NMS'd masks."""

    def __init__(self, model, processor, cfg: SamConfig | None = None):
        self.model = model.eval()
        self.processor = processor
        self.cfg = cfg or SamConfig()

    @torch.no_grad()
    def __call__(self, img: Image.Image) -> tuple[np.ndarray, np.ndarray]:
        """Masks ``(M, H, W)`` bool and scores ``(M,)`` (predicted IoU), best first."""
        from torchvision.ops import batched_nms, masks_to_boxes

        cfg = self.cfg
        device = next(self.model.parameters()).device
        inputs = self.processor(images=img.convert("RGB"), return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(device)
        original = inputs["original_sizes"]  # (1, 2) (H, W)
        reshaped = inputs["reshaped_input_sizes"]  # (1, 2)
        emb = self.model.get_image_embeddings(pixel_values)
        rh, rw = (int(v) for v in reshaped[0])
        n = cfg.points_per_side
        grid = (torch.arange(n, dtype=torch.float32) + 0.5) / n
        ys, xs = torch.meshgrid(grid * rh, grid * rw, indexing="ij")
        points = torch.stack([xs.flatten(), ys.flatten()], dim=-1)  # (P, 2) x, y in the model frame
        all_masks, all_scores = [], []
        for i in range(0, len(points), cfg.points_per_batch):
            pts = points[i : i + cfg.points_per_batch]
            out = self.model(
                image_embeddings=emb,
                input_points=pts[None, :, None, :].to(device),  # (1, P, 1, 2)
                input_labels=torch.ones(1, len(pts), 1, dtype=torch.long, device=device),
                multimask_output=True,
            )
            logits = self.processor.post_process_masks(
                out.pred_masks.cpu(), original, reshaped, binarize=False
            )[0]  # (P, 3, H, W)
            iou = out.iou_scores[0].cpu()  # (P, 3)
            best = iou.argmax(dim=-1)  # (P,)
            idx = torch.arange(len(pts))
            logits, iou = logits[idx, best], iou[idx, best]  # (P, H, W), (P,)
            inter = (logits > cfg.stability_offset).flatten(1).sum(-1).float()
            union = (logits > -cfg.stability_offset).flatten(1).sum(-1).float()
            stability = inter / union.clamp_min(1.0)
            masks = logits > 0.0
            keep = (iou >= cfg.pred_iou_thresh) & (stability >= cfg.stability_thresh)
            keep &= masks.flatten(1).any(-1)
            all_masks.append(masks[keep])
            all_scores.append(iou[keep])
        masks = torch.cat(all_masks) if all_masks else torch.zeros(0, img.height, img.width, dtype=torch.bool)
        scores = torch.cat(all_scores) if all_scores else torch.zeros(0)
        if len(masks):
            boxes = masks_to_boxes(masks).float()
            keep = batched_nms(boxes, scores, torch.zeros(len(masks), dtype=torch.long), cfg.nms_thresh)
            masks, scores = masks[keep], scores[keep]  # keep is sorted by score
        return masks.numpy(), scores.numpy()


# --------------------------------------------------------------------------- the view
@VIEWS.register("sam")
class SamRegionsView(View):
    """Up to N SAM mask regions (bounding box, outside filled), zero-padded to (N, 3, S, S)."""

    name = "sam"

    def __init__(
        self,
        backbone: Backbone,
        model: str | None = "facebook/sam-vit-base",
        n: int = 16,
        area: tuple[float, float] = (0.05, 0.8),
        fill: str = "mean",
        sam_model=None,
        sam_processor=None,
        device: str = "cpu",
        **sam_opts: Any,
    ):
        if fill not in FILLS:
            raise ConfigError(f"sam view: fill must be one of {', '.join(FILLS)}, got {fill!r}")
        a, b = (float(v) for v in area)
        if not 0 <= a <= b <= 1:
            raise ConfigError(f"sam view: area must satisfy 0 <= a <= b <= 1, got {area}")
        if int(n) < 1:
            raise ConfigError(f"sam view: n must be >= 1, got {n}")
        self.n, self.area, self.fill = int(n), (a, b), fill
        self.num_views = self.n
        self.sam_cfg = SamConfig(**sam_opts)
        self.preprocess = backbone.preprocess
        self.mean = tuple(backbone.mean)
        self.size = backbone.image_size
        self.pp = dict(getattr(backbone, "preprocess_cfg", {}))
        self.model_spec, self.device = model, device
        self._generator = None
        if sam_model is not None:
            if sam_processor is None:
                raise ConfigError("sam view: sam_model needs sam_processor too")
            self._generator = SamMaskGenerator(sam_model, sam_processor, self.sam_cfg)
            self.model_id = f"module:{model_digest(sam_model)}"
        elif model is None:
            raise ConfigError("sam view: give model= (a SAM hub id or folder) or sam_model=")
        else:
            self.model_id = str(model)

    @property
    def generator(self) -> SamMaskGenerator:
        if self._generator is None:
            self._generator = SamMaskGenerator(*load_sam(self.model_spec, self.device), self.sam_cfg)
        return self._generator

    def regions(self, img: Image.Image) -> list[Image.Image]:
        """The region images of ``img`` (at most ``n``, best SAM score first)."""
        img = img.convert("RGB")
        masks, scores = self.generator(img)
        keep = select_masks(masks, scores, self.n, self.area)
        return [mask_to_region(img, masks[i], self.fill, self.mean) for i in keep]

    def __call__(self, img, rng):
        views = [self.preprocess(r) for r in self.regions(img)]
        pad = torch.zeros(3, self.size, self.size)
        views += [pad] * (self.n - len(views))
        return torch.stack(views)  # (n, 3, S, S)

    def config(self):
        return {
            "view": self.name, "model": self.model_id, "n": self.n, "area": list(self.area),
            "fill": self.fill, "sam": asdict(self.sam_cfg), "preprocess": self.pp,
        }


@torch.no_grad()
def pad_embedding(backbone: Backbone) -> torch.Tensor:
    """Embedding ``(d,)`` of the padding region (an all-zero normalised image)."""
    x = torch.zeros(1, 3, backbone.image_size, backbone.image_size, device=backbone.device)
    return backbone.encode_image(x).embeds[0].float().cpu()


def valid_regions(embeds: torch.Tensor, pad: torch.Tensor, tol: float = 1e-4) -> torch.Tensor:
    """Rows that are real regions: embeds ``(N, L, d)``, pad ``(d,)`` -> ``(N, L)`` bool.

    A row is padding when its cosine with the padding embedding exceeds ``1 - tol``.
    """
    cos = F.normalize(embeds, dim=-1) @ F.normalize(pad, dim=-1)  # (N, L)
    return cos < 1.0 - tol


__all__ = [
    "FILLS", "SamConfig", "SamMaskGenerator", "SamRegionsView", "load_sam", "mask_bbox",
    "mask_to_region", "model_digest", "pad_embedding", "select_masks", "valid_regions",
]
