"""Robust image loading: every readable file becomes an 8-bit RGB ``PIL.Image``.

Real benchmark folders contain grayscale, palette, CMYK, 16-bit and alpha images, EXIF-rotated
phone photos, truncated downloads and the odd HTML page saved as ``.jpg``. :func:`load_rgb`
turns the first kind into RGB without distorting intensities and turns the second kind into a
:class:`CorruptImageError` that names the file, so a data set can skip and list it.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from labelless.errors import DataError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)

# Far above any benchmark image (SUN397's largest are ~10 Mpx) yet small enough that a
# decompression bomb cannot exhaust memory; load_rgb(max_pixels=...) overrides it per call.
DEFAULT_MAX_PIXELS = 200_000_000

# PIL's bomb check reads the global Image.MAX_IMAGE_PIXELS; raising it for one call must not
# race with another thread that relies on the default.
_PIL_LIMIT_LOCK = threading.Lock()


class CorruptImageError(DataError):
    """An image file that cannot be decoded (missing, truncated, not an image, too large)."""

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image '{self.path}': {reason}")


class ImageTooLargeError(CorruptImageError):
    """An image with more pixels than allowed (a possible decompression bomb)."""


def _open(path: str, max_pixels: int | None) -> Image.Image:
    """``Image.open`` with PIL's bomb guard replaced by ``max_pixels`` (checked by the caller)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(path)
        except Image.DecompressionBombError:
            pil_limit = Image.MAX_IMAGE_PIXELS
            if max_pixels is not None and pil_limit is not None and max_pixels <= 2 * pil_limit:
                raise
        # The caller allows more pixels than PIL's hard limit: open without it, then check.
        with _PIL_LIMIT_LOCK:
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                return Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = saved


def _to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Map a single-channel high-bit-depth array to ``uint8`` without clipping."""
    arr = arr.astype(np.float64)
    if mode.startswith("I;16"):
        scaled = arr / 257.0  # the exact 16 -> 8 bit mapping: 65535 -> 255
    elif mode == "I" and arr.size and arr.min() >= 0 and arr.max() <= 65535:
        scaled = arr / 257.0  # PNG 16-bit grayscale decodes as mode "I" in some Pillow versions
    elif mode == "F" and arr.size and arr.min() >= 0 and arr.max() <= 1:
        scaled = arr * 255.0
    else:
        # Unknown range (signed ints, arbitrary floats): stretch to the full 8-bit range.
        finite = arr[np.isfinite(arr)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        scaled = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _on_white(img: Image.Image) -> Image.Image:
    """Composite an image with alpha onto a white background (CLIP never saw transparency)."""
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a loaded image of any PIL mode to 8-bit RGB (alpha composited on white)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I", "F") or mode.startswith("I;16"):
        gray = _to_uint8(np.asarray(img), mode)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _on_white(img)
    if mode == "P":
        return _on_white(img) if "transparency" in img.info else img.convert("RGB")
    if mode in ("L", "1") and "transparency" in img.info:
        return _on_white(img)
    return img.convert("RGB")


def load_rgb(
    path: str | os.PathLike,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_side: int | None = None,
) -> Image.Image:
    """Open any image file as an 8-bit RGB ``PIL.Image`` with its EXIF orientation applied.

    Args:
        path: the image file.
        max_pixels: refuse images with more pixels than this (decompression-bomb guard);
            ``None`` disables the guard.
        max_side: if given, larger images are decoded at a reduced size (JPEG via
            ``Image.draft``, which decodes at 1/2, 1/4 or 1/8 scale and is much faster; other
            formats via ``Image.reduce`` by an integer factor). The longer side never drops
            below ``max_side``, so a later resize to ``max_side`` loses nothing; the pixel
            guard applies to the reduced size, so a huge JPEG can still be read cheaply.

    Raises:
        CorruptImageError: the file is missing, is not an image, or is truncated.
        ImageTooLargeError: the image has more than ``max_pixels`` pixels.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CorruptImageError(path, "no such file")
    try:
        img = _open(path, max_pixels)
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(path, f"{e} (pass a larger max_pixels if it is genuine)") from e
    except Exception as e:  # noqa: BLE001 - decoders raise anything from OSError to struct.error
        raise CorruptImageError(path, f"not a readable image ({type(e).__name__}: {e})") from e
    with img:
        try:
            if max_side is not None and max(img.size) > max_side:
                scale = max_side / max(img.size)
                if img.format == "JPEG":
                    # draft picks the smallest DCT scale whose size is still >= the request.
                    img.draft(None, (math.ceil(img.width * scale), math.ceil(img.height * scale)))
            if max_pixels is not None and img.width * img.height > max_pixels:
                raise ImageTooLargeError(
                    path,
                    f"{img.width}x{img.height} = {img.width * img.height} pixels exceeds "
                    f"max_pixels={max_pixels} (pass a larger max_pixels if it is genuine)",
                )
            # Image.open only reads the header; decoding here is what detects truncation.
            img.load()
            if max_side is not None and max(img.size) > max_side:
                factor = max(img.size) // max_side
                if factor >= 2:
                    img = img.reduce(factor)
            try:
                oriented = ImageOps.exif_transpose(img)
            except Exception:  # noqa: BLE001 - a broken EXIF block should not lose the pixels
                oriented = img
            rgb = to_rgb(oriented if oriented is not None else img)
            # Detach from the file handle, which the ``with`` closes.
            return rgb.copy() if rgb is img else rgb
        except CorruptImageError:
            raise
        except Exception as e:  # noqa: BLE001 - see above
            raise CorruptImageError(path, f"truncated or corrupt ({type(e).__name__}: {e})") from e


def is_image_file(path: str | os.PathLike) -> bool:
    """True if the file name has one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def scan_images(root: str | os.PathLike) -> list[Path]:
    """All image files under ``root``, recursively, sorted by relative path.

    Files are matched by extension (:data:`IMAGE_EXTENSIONS`, case-insensitive); hidden files
    and hidden folders (name starting with ``.``) are skipped. Symlinked folders are followed
    once each, so a link loop cannot hang the scan.

    Raises:
        DataError: ``root`` does not exist or is not a folder.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"image folder '{root}' does not exist; check the path")
    if not root.is_dir():
        raise DataError(f"'{root}' is not a folder; pass a folder that contains images")
    found: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for f in filenames:
            if not f.startswith(".") and is_image_file(f):
                p = Path(dirpath) / f
                found.append((p.relative_to(root).as_posix(), p))
    found.sort(key=lambda t: t[0])
    return [p for _, p in found]
