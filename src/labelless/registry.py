"""Small name -> object registries, one per extension axis.

Entries are registered next to their definition with a decorator. The first lookup in any
registry imports every module that registers (:func:`load_all`), so a lookup never depends on a
remembered import (the failure mode of CoOp's ``train.py``), while ``import labelless`` itself
stays light (no torch until something is looked up or used). Registering a name twice raises; a
failed lookup lists the valid names and suggests a close match.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from labelless.errors import UnknownNameError, did_you_mean

T = TypeVar("T")

#: The modules whose import registers entries (backbone sources, data sets, text sources, views,
#: scorers, tuners, methods and classifier kinds, the testbed's data/backbone/texts).
REGISTERING_MODULES = (
    "labelless.backbones",
    "labelless.data",
    "labelless.text",
    "labelless.views",
    "labelless.scoring",
    "labelless.tuners",
    "labelless.methods",
    "labelless.data.testbed",
    "labelless.eval.estimators",
)
_loaded = False


def load_all() -> None:
    """Import every registering module once (idempotent; safe to call while they import)."""
    global _loaded
    if _loaded:
        return
    _loaded = True  # set first: the modules below look entries up while they import
    import importlib

    try:
        for name in REGISTERING_MODULES:
            importlib.import_module(name)
    except BaseException:
        _loaded = False
        raise


class Registry(Generic[T]):
    """A named collection of objects of one kind (backbones, methods, data sets, ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, obj: T | None = None, *, help: str | None = None):
        """Register ``obj`` under ``name``; usable as ``@REG.register("name")``."""

        def add(o: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = o
            doc = help if help is not None else (getattr(o, "__doc__", None) or "")
            self._help[name] = doc.strip().splitlines()[0] if doc.strip() else ""
            return o

        return add(obj) if obj is not None else add

    def get(self, name: str) -> T:
        """The object registered as ``name``; :class:`UnknownNameError` lists the valid names."""
        load_all()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'.{did_you_mean(name, self._entries)} "
                f"Available: {', '.join(sorted(self._entries))}"
            ) from None

    def describe(self, name: str) -> str:
        """First docstring line of the entry (shown by ``labelless list``)."""
        load_all()
        return self._help.get(name, "")

    def names(self) -> list[str]:
        load_all()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        load_all()
        return iter(sorted(self._entries.items()))

    def __contains__(self, name: object) -> bool:
        load_all()
        return name in self._entries

    def __len__(self) -> int:
        load_all()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


BACKBONES: Registry[Callable] = Registry("backbone source")
METHODS: Registry[type] = Registry("method")
DATASETS: Registry[Callable] = Registry("data set")
SCORERS: Registry[Callable] = Registry("scorer")
VIEWS: Registry[Callable] = Registry("view")
TUNERS: Registry[Callable] = Registry("tuner")
TEXT_SOURCES: Registry[Callable] = Registry("text source")
CLASSIFIERS: Registry[type] = Registry("classifier kind")
ESTIMATORS: Registry[Callable] = Registry("accuracy estimator")
