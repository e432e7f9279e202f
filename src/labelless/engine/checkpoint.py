"""Atomic, safe checkpoints.

Checkpoints are written to a temporary file and renamed into place, so a kill at any moment
leaves either the previous checkpoint or the new one, never a torn file. They are read with
``torch.load(weights_only=True)``: a checkpoint from elsewhere cannot run code on load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from labelless.errors import LabellessError
from labelless.utils.io import atomic_save


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) atomically to ``path``."""
    return atomic_save(Path(path), lambda p: torch.save(state, p))


def load_checkpoint(path: str | Path, map_location="cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` without unpickling code."""
    path = Path(path)
    if not path.is_file():
        raise LabellessError(f"checkpoint '{path}' does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise LabellessError(f"checkpoint '{path}' cannot be read safely: {e}") from e
