"""Methods, one file each, registered in ``labelless.registry.METHODS``."""

from labelless.methods import coft, fair, latteclip, prototype, region_probe, zeroshot  # noqa: F401
from labelless.methods.base import (
    Classifier,
    FitContext,
    FitResult,
    Method,
    Runtime,
    load_classifier,
)

__all__ = ["Classifier", "FitContext", "FitResult", "Method", "Runtime", "load_classifier"]
