"""Collages: K images tiled into one square-ish grid image, as LaTTe-CLIP feeds groups to LLaVA."""

from __future__ import annotations

import math

from PIL import Image

from labelless.errors import ConfigError


def collage_grid(k: int) -> tuple[int, int]:
    """``(cols, rows)`` of the grid for ``k`` images: ``cols = ceil(sqrt(k))``, ``rows =
    ceil(k / cols)`` (4 -> 2x2, 3 -> 2x2 with one empty cell, 5 -> 3x2, 16 -> 4x4)."""
    if k < 1:
        raise ConfigError(f"a collage needs at least one image, got {k}")
    cols = math.ceil(math.sqrt(k))
    return cols, math.ceil(k / cols)


def _cover(img: Image.Image, tile: int) -> Image.Image:
    """Centre-crop ``img`` to a square and resize it to ``tile`` x ``tile``."""
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.crop((left, top, left + s, top + s)).resize((tile, tile), Image.BICUBIC)


def make_collage(images: list[Image.Image], size: int = 672, background=(0, 0, 0)) -> Image.Image:
    """Tile ``images`` row-major into a grid (see :func:`collage_grid`) of square tiles of side
    ``size // cols``; the canvas is ``cols*tile`` x ``rows*tile`` (672 x 672 for 4 images, the
    official LaTTe-CLIP setting: four 336 px tiles, LLaVA-1.6's native tile size). Each image is
    centre-cropped to a square, so no tile is distorted."""
    if size < 1:
        raise ConfigError(f"collage size must be >= 1, got {size}")
    cols, rows = collage_grid(len(images))
    tile = size // cols
    if tile < 1:
        raise ConfigError(f"collage size {size} is too small for {len(images)} images")
    canvas = Image.new("RGB", (cols * tile, rows * tile), background)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        canvas.paste(_cover(img.convert("RGB"), tile), (c * tile, r * tile))
    return canvas
