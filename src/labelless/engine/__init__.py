"""Training engine: the one training loop, checkpoints, per-epoch logs."""

from labelless.engine.checkpoint import load_checkpoint, save_checkpoint
from labelless.engine.loop import (
    EpochSampler,
    NonFiniteLossError,
    NonFiniteWeightsError,
    OptimConfig,
    TrainLoop,
)

__all__ = [
    "EpochSampler",
    "NonFiniteLossError",
    "NonFiniteWeightsError",
    "OptimConfig",
    "TrainLoop",
    "load_checkpoint",
    "save_checkpoint",
]
