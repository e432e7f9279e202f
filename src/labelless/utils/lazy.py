"""A module imported on its first attribute access.

``import torchvision`` costs about a second (it imports ``torchvision.models`` and, through
``torchvision.ops``, ``torch._dynamo``). Modules that register entries only use torchvision
inside functions, so ``labelless list`` and other commands that only read the registries should
not pay for it: they bind ``T = lazy_module("torchvision.transforms")`` instead of importing it.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _LazyModule:
    def __init__(self, name: str):
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):  # pickling, copying and introspection probes
            raise AttributeError(attr)
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{' (loaded)' if self._module is not None else ''}>"


def lazy_module(name: str) -> Any:
    """A stand-in for ``importlib.import_module(name)`` that imports on first attribute use."""
    return _LazyModule(name)


__all__ = ["lazy_module"]
