"""Typed configuration: dataclasses are the source of truth.

Each method, data set and run has a dataclass with documented fields and validation in
``__post_init__``. YAML recipes and ``--set a.b=c`` flags only override those defaults
(:func:`apply_overrides`); the fully resolved config is saved with every run (:func:`to_dict`).
Library functions take config objects, never the CLI's ``argparse`` namespace.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from labelless.errors import ConfigError, did_you_mean

C = TypeVar("C")


def to_dict(cfg: Any) -> Any:
    """A JSON/YAML-safe nested dict of a (nested) config dataclass."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {str(k): to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert ``value`` (from YAML or a ``--set`` string) to the annotated type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: cannot use {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v] if value else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        out = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "no", "0", "off"):
            return False
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            out = tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from None
        if tp is int and isinstance(value, float) and value != out:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if tp is float and not math.isfinite(out):
            # nan/inf pass every "> 0" check and train a classifier of NaNs
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return out
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if tp is Path:
        return Path(value)
    return value


def from_dict(cls: type[C], data: dict, where: str = "") -> C:
    """Build ``cls`` from a (possibly partial) mapping; unknown keys are an error."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    names = set(fields)
    kwargs = {}
    for key, value in (data or {}).items():
        if key not in names:
            raise ConfigError(
                f"unknown config key '{where + '.' if where else ''}{key}'.{did_you_mean(key, names)}"
                f" Valid keys: {', '.join(sorted(names))}"
            )
        full = f"{where + '.' if where else ''}{key}"
        f = fields[key]
        if isinstance(value, dict) and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
            if dataclasses.is_dataclass(default):
                # A partial mapping overrides this class's own default for the field (e.g. a
                # method's OptimConfig with lr 1e-7), not the nested class's bare defaults.
                kwargs[key] = _merge(default, value, full)
                continue
        kwargs[key] = _coerce(value, hints[key], full)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def apply_overrides(cfg: C, overrides: dict[str, Any]) -> C:
    """A copy of ``cfg`` with dotted-key overrides applied (``{"optim.lr": "1e-4"}``).

    Values are coerced to the field's annotated type; validation (``__post_init__``) runs again.
    """
    return _merge(cfg, nest_overrides(overrides), "")


def nest_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"optim.lr": "1e-4", "k": "8"}`` -> ``{"optim": {"lr": "1e-4"}, "k": "8"}``."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        node = nested
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{key}' conflicts with another override")
        node[parts[-1]] = value
    return nested


def merge_params(params: dict[str, Any] | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """A method's (partial) parameter mapping with dotted-key overrides merged in, nested
    mappings merged key by key (``--set optim.lr=...`` keeps the recipe's ``optim.epochs``).

    Unlike :func:`apply_overrides` it does not build the config first: a recipe that is only
    valid together with its overrides (LaTTe-CLIP without ``captions`` until ``--set
    captions=...``) is validated once, whole, by ``from_dict`` afterwards.
    """
    return deep_merge(params or {}, nest_overrides(overrides))


def deep_merge(base: dict, patch: dict | None) -> dict:
    """A deep copy of ``base`` with ``patch`` merged in: nested mappings key by key, anything
    else replaced."""
    out = copy.deepcopy(base)
    for k, v in (patch or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _merge(cfg: Any, patch: dict, where: str) -> Any:
    hints = typing.get_type_hints(type(cfg))
    fields = {f.name for f in dataclasses.fields(cfg) if f.init}
    kwargs = {f: getattr(cfg, f) for f in fields}
    for key, value in patch.items():
        full = f"{where}.{key}" if where else key
        if key not in fields:
            raise ConfigError(
                f"unknown config key '{full}'.{did_you_mean(key, fields)} "
                f"Valid keys here: {', '.join(sorted(fields))}"
            )
        current = kwargs[key]
        if isinstance(value, dict) and dataclasses.is_dataclass(current):
            kwargs[key] = _merge(current, value, full)
        else:
            kwargs[key] = _coerce(value, hints[key], full)
    try:
        return type(cfg)(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or type(cfg).__name__}: {e}") from None


def parse_set_flags(items: list[str] | None) -> dict[str, str]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": "1", "c": "x"}`` with a clear error on bad syntax."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got '{item}'")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def load_yaml(path: str | Path) -> dict:
    """Read a YAML recipe into a mapping, naming the file on any error."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{p}' does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file '{p}' is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{p}' must hold a mapping at the top level")
    return data


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (dataclass-valued leaves stay nested dicts)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out
