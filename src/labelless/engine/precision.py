"""One precision setting per run: ``optim.precision``, honoured by the training loop and by every
method's own forwards.

``fp32``: no autocast anywhere. ``bf16``: ``torch.autocast(<device>, dtype=torch.bfloat16)``
around the training step (and a method's own no-grad encoder forwards), on CUDA or CPU; bf16 has
fp32's range, so no loss scaling is needed. ``auto``: ``bf16`` on CUDA, ``fp32`` elsewhere (what
the loop did before the setting existed).

Whatever the setting, pseudo-label scores, margins and weights are computed in fp32: methods wrap
them in :func:`full_precision`, which switches autocast off (an ``argmax`` or a ``top1 - top2``
margin in bf16 has a resolution of about 0.002 near cosines of 0.3, the size of typical margins).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Literal

import torch

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``fp32`` or ``bf16`` for ``precision`` on ``device`` (``auto``: bf16 on CUDA only)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if torch.device(device).type == "cuda" else "fp32"
    return precision


def autocast(precision: str, device: torch.device | str) -> AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    device = torch.device(device)
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def full_precision(device: torch.device | str) -> AbstractContextManager:
    """Autocast off on ``device`` inside the block (fp32 inputs stay fp32 in matmuls)."""
    device = torch.device(device)
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, enabled=False)
    return nullcontext()


__all__ = ["PRECISIONS", "Precision", "autocast", "full_precision", "resolve_precision"]
