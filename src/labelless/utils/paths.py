"""Where labelless keeps caches and finds data: one definition each.

``default_cache_dir()``: ``$LABELLESS_CACHE`` (``~`` expanded) or ``~/.cache/labelless``; the
feature cache, the testbed and downloaded description sets live under it.

``slug(text)``: a folder name for run and experiment folders.

``data_root()``: ``$LABELLESS_DATA`` (set by ``--data-root``), the folder relative data-set
roots are looked up in first, so a recipe's ``eurosat:root=eurosat`` runs unchanged on any
machine once the data root is set.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

CACHE_ENV = "LABELLESS_CACHE"
DATA_ENV = "LABELLESS_DATA"


def default_cache_dir() -> Path:
    """``$LABELLESS_CACHE`` if set (``~`` expanded), else ``~/.cache/labelless``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "labelless"


def data_root() -> Path | None:
    """``$LABELLESS_DATA`` (``~`` expanded), or None when unset."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else None


def resolve_data_path(value: str) -> str:
    """A data-set ``root=``/``path=`` value: absolute paths as given; a relative one under the
    data root when it exists there, else relative to the working directory."""
    p = Path(value).expanduser()
    root = data_root()
    if p.is_absolute() or root is None:
        return str(p)
    under = root / p
    return str(under) if under.exists() or not p.exists() else str(p)


__all__ = ["CACHE_ENV", "DATA_ENV", "data_root", "default_cache_dir", "resolve_data_path"]


def slug(text: str, *, keep_plus: bool = False, max_len: int = 60, fallback: str = "run") -> str:
    """A folder name from ``text``: runs of characters other than letters, digits, ``_ . -``
    become one ``-``; leading/trailing ``-`` and ``.`` are dropped; at most ``max_len`` characters.

    Two flavours exist because folders already on disk were named by each, and a rerun or a
    ``--resume`` must find them again:

    * run folders (``labelless adapt``'s default ``--out``, the demo, ``eval-<data>``): the
      default; ``+`` becomes ``-plus`` (``coft+`` and ``coft`` must not share a folder), 60
      characters, ``run`` if nothing is left;
    * experiment folders (``labelless bench``: experiment, run, data and model names):
      ``keep_plus=True, max_len=80, fallback="x"``; ``+`` is kept (``runs/exp/coft+/...``).
    """
    text = str(text)
    if not keep_plus:
        text = re.sub(r"\s*\+", "-plus", text)
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", text).strip("-.")[:max_len] or fallback
