"""Thumbnails for the report: small JPEG files beside ``report.html``, one per shown image.

Only images a gallery shows are opened (``draft`` mode lets Pillow decode large JPEGs at a
fraction of their size). An image that cannot be read (moved, deleted, corrupt) is recorded as
missing with the reason, and the report shows a placeholder instead of failing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

__all__ = ["Thumb", "ThumbnailStore"]


@dataclass
class Thumb:
    """A shown image: ``src`` (relative to the report) or ``missing`` (why it is absent)."""

    path: str
    src: str | None = None
    missing: str | None = None


class ThumbnailStore:
    """Makes each thumbnail once, under ``<out_dir>/<subdir>/``; remembers the missing ones."""

    def __init__(self, out_dir: Path, size: int = 112, subdir: str = "thumbs"):
        self.out_dir = Path(out_dir)
        self.size = int(size)
        self.subdir = subdir
        self._done: dict[str, Thumb] = {}

    @property
    def missing(self) -> list[Thumb]:
        return [t for t in self._done.values() if t.missing]

    @property
    def made(self) -> int:
        return sum(t.src is not None for t in self._done.values())

    def get(self, path: str) -> Thumb:
        if path in self._done:
            return self._done[path]
        name = hashlib.sha1(path.encode("utf-8")).hexdigest()[:16] + ".jpg"
        rel = f"{self.subdir}/{name}"
        target = self.out_dir / rel
        try:
            with Image.open(path) as im:
                im.draft("RGB", (self.size, self.size))  # JPEG: decode at reduced scale
                im = ImageOps.exif_transpose(im).convert("RGB")
                im.thumbnail((self.size, self.size), Image.Resampling.LANCZOS)
                if min(im.size) < 1:
                    raise OSError("empty image")
                # upscale tiny images (e.g. 32 px) so the thumbnail grid stays even
                if max(im.size) < self.size:
                    f = self.size / max(im.size)
                    im = im.resize((max(1, round(im.width * f)), max(1, round(im.height * f))),
                                   Image.Resampling.NEAREST)
                target.parent.mkdir(parents=True, exist_ok=True)
                im.save(target, "JPEG", quality=88)
            thumb = Thumb(path=path, src=rel)
        except FileNotFoundError:
            thumb = Thumb(path=path, missing="file not found (moved or deleted since the run)")
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            thumb = Thumb(path=path, missing=f"unreadable: {type(e).__name__}: {e}"[:200])
        self._done[path] = thumb
        return thumb
