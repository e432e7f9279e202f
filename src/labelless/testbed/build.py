"""One call that yields a ready testbed: a pre-trained tiny CLIP and its downstream task."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from labelless.testbed.cache import default_cache_dir
from labelless.testbed.pretrain import (
    MODEL_NAME,
    PretrainConfig,
    ensure_pretrained,
    pretrain_hash,
    register_model_configs,
)
from labelless.testbed.task import TaskConfig, TaskPaths, build_task, task_hash


@dataclass
class TestbedConfig:
    """Pre-training and downstream task of the testbed."""

    __test__ = False  # not a pytest test class despite the name

    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    """How the tiny CLIP is pre-trained (its world is the pre-training domain)."""
    task: TaskConfig = field(default_factory=TaskConfig)
    """The downstream task (its world is the shifted domain)."""


@dataclass
class Testbed:
    """A built testbed: where the checkpoint and the task live, and how to load them."""

    __test__ = False

    checkpoint: Path
    """open_clip checkpoint ``{"state_dict": ...}`` of :data:`MODEL_NAME`."""
    task: TaskPaths
    """The downstream task on disk."""
    model_hash: str
    """Cache key of the checkpoint."""
    config: TestbedConfig
    """The configuration it was built from."""
    seconds: float = 0.0
    """Wall time of the :func:`ensure_testbed` call that returned it (0 when all cached)."""

    @property
    def model_name(self) -> str:
        """open_clip model config name (registered by :func:`ensure_testbed`)."""
        return self.config.pretrain.model

    @property
    def spec(self) -> str:
        """Backbone spec for :func:`labelless.backbones.load_backbone`."""
        return f"openclip:{self.model_name}:{self.checkpoint}"


def ensure_testbed(
    cache_dir: Path | str | None = None,
    progress: bool = True,
    config: TestbedConfig | None = None,
) -> Testbed:
    """Build whatever is missing (checkpoint, task) for ``config`` and return the testbed.

    Both parts are cached by config hash under ``cache_dir`` (default :func:`default_cache_dir`):
    ``testbed/<model-hash>/model.pt`` and ``testbed/tasks/<task-hash>/``; a second call with the
    same config returns at once. Also registers the open_clip model config.
    """
    config = config or TestbedConfig()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    register_model_configs()
    t0 = time.time()
    ckpt = ensure_pretrained(config.pretrain, cache_dir, progress=progress)
    task = build_task(config.task, cache_dir / "testbed" / "tasks", progress=progress)
    return Testbed(
        checkpoint=ckpt,
        task=task,
        model_hash=pretrain_hash(config.pretrain),
        config=config,
        seconds=round(time.time() - t0, 2),
    )


__all__ = ["MODEL_NAME", "Testbed", "TestbedConfig", "ensure_testbed", "task_hash"]
