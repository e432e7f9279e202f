"""labelless: label-free adaptation of CLIP-like models to image classification.

The Python API mirrors the command line (see :mod:`labelless.api`)::

    import labelless

    result = labelless.zeroshot("openclip:ViT-B-32:openai", "eurosat:root=data/eurosat,split=test")
    result.metrics.top1
    clf = labelless.load_classifier(result.classifier_dir)
    clf.predict(["photo.jpg"]).labels

Importing the package is cheap: torch, open_clip and the registries load on first use (the
first attribute access below, or the first registry lookup, which imports every registering
module so lookups never depend on a remembered import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it (imported on first access)
_LAZY = {
    "adapt": "labelless.api",
    "zeroshot": "labelless.api",
    "predict": "labelless.api",
    "evaluate": "labelless.api",
    "load_classifier": "labelless.api",
    "export": "labelless.api",
    "LoadedClassifier": "labelless.api",
    "RunResult": "labelless.api",
    "EvalResult": "labelless.api",
    "Predictions": "labelless.api",
    "Metrics": "labelless.eval.metrics",
    "Runtime": "labelless.methods.base",
    "RunConfig": "labelless.runner",
    "Backbone": "labelless.backbones.base",
    "load_backbone": "labelless.backbones",
    "LabellessError": "labelless.errors",
}

__all__ = [
    "Backbone",
    "EvalResult",
    "LabellessError",
    "LoadedClassifier",
    "Metrics",
    "Predictions",
    "RunConfig",
    "RunResult",
    "Runtime",
    "__version__",
    "adapt",
    "evaluate",
    "export",
    "load_backbone",
    "load_classifier",
    "predict",
    "zeroshot",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from labelless.api import (
        EvalResult,
        LoadedClassifier,
        Predictions,
        RunResult,
        adapt,
        evaluate,
        export,
        load_classifier,
        predict,
        zeroshot,
    )
    from labelless.backbones import load_backbone
    from labelless.backbones.base import Backbone
    from labelless.errors import LabellessError
    from labelless.eval.metrics import Metrics
    from labelless.methods.base import Runtime
    from labelless.runner import RunConfig


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'labelless' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
