"""Shared fixtures: tiny random backbones, synthetic labelled image folders, the shared data."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import labelless  # noqa: F401  (fills the registries)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = SHARED / "data"

TINY = "openclip:labelless-tiny:random"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present beside the repository")
    return SHARED_DATA


@pytest.fixture
def tiny_backbone():
    """A randomly initialised tiny open_clip model (seeded: identical in every test)."""
    from labelless.backbones import load_backbone

    return load_backbone(TINY)


COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def make_colour_folder(root: Path, per_class: int = 6, size: int = 40, seed: int = 0) -> Path:
    """A labelled ImageFolder: one sub-folder per colour, noisy solid-colour images."""
    rng = np.random.default_rng(seed)
    for name, rgb in COLOURS.items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = np.clip(np.array(rgb) + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(d / f"{name}_{i}.png")
    return root


@pytest.fixture
def colour_folder(tmp_path) -> Path:
    return make_colour_folder(tmp_path / "colours")


@pytest.fixture
def lablog(caplog):
    """``caplog`` that also sees the ``labelless`` logger's records once a CLI call in this
    process has stopped them propagating to the root logger (``setup_cli_logging``)."""
    logger = logging.getLogger("labelless")
    level = logger.level
    logger.addHandler(caplog.handler)
    logger.setLevel(logging.INFO)
    yield caplog
    logger.removeHandler(caplog.handler)
    logger.setLevel(level)
