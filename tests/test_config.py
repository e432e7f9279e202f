"""Typed config helpers, spec strings and registries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from labelless.config import apply_overrides, from_dict, parse_set_flags, to_dict
from labelless.errors import ConfigError, UnknownNameError
from labelless.registry import Registry
from labelless.spec import parse_spec


@dataclass
class Inner:
    lr: float = 1e-3
    min_lr: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Outer:
    name: str = "x"
    mode: Literal["a", "b"] = "a"
    steps: int = 3
    flag: bool = False
    inner: Inner = field(default_factory=lambda: Inner(lr=5e-5, min_lr=2e-6))
    tags: list[str] = field(default_factory=list)
    opt: float | None = None

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError("steps must be >= 0")


def test_partial_nested_mapping_keeps_the_parents_defaults():
    cfg = from_dict(Outer, {"inner": {"lr": 1e-6}})
    assert cfg.inner.lr == 1e-6
    assert cfg.inner.min_lr == 2e-6  # the parent's default, not Inner's bare 0.0


def test_overrides_coerce_types_and_validate():
    cfg = apply_overrides(Outer(), {"steps": "7", "flag": "true", "inner.lr": "1e-4",
                                    "inner.betas": "0.8,0.9", "tags": "a,b", "opt": "none"})
    assert cfg.steps == 7 and cfg.flag is True and cfg.inner.lr == 1e-4
    assert cfg.inner.betas == (0.8, 0.9) and cfg.tags == ["a", "b"] and cfg.opt is None
    assert cfg.inner.min_lr == 2e-6
    with pytest.raises(ConfigError, match="steps must be >= 0"):
        apply_overrides(Outer(), {"steps": "-1"})
    with pytest.raises(ConfigError, match="not one of"):
        apply_overrides(Outer(), {"mode": "c"})
    with pytest.raises(ConfigError, match="Did you mean 'steps'"):
        apply_overrides(Outer(), {"stepz": "1"})
    with pytest.raises(ConfigError, match="expected int"):
        apply_overrides(Outer(), {"steps": "many"})
    with pytest.raises(ConfigError, match="expected true/false"):
        apply_overrides(Outer(), {"flag": "maybe"})


def test_to_dict_round_trips():
    cfg = apply_overrides(Outer(), {"inner.lr": "0.5", "name": "y"})
    assert from_dict(Outer, to_dict(cfg)) == cfg


def test_set_flags_need_key_value():
    assert parse_set_flags(["a.b=1", "c = x=y"]) == {"a.b": "1", "c": "x=y"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_set_flags(["novalue"])


def test_parse_spec_keeps_commas_and_colons_inside_values():
    assert parse_spec("eurosat:root=/a/b,split=test") == ("eurosat", {"root": "/a/b", "split": "test"})
    assert parse_spec("csv:path=s3:x,y.csv,root=/r") == ("csv", {"path": "s3:x,y.csv", "root": "/r"})
    assert parse_spec("names") == ("names", {})
    with pytest.raises(ConfigError, match="given twice"):
        parse_spec("x:a=1,a=2")
    with pytest.raises(ConfigError, match="empty"):
        parse_spec("  ")


def test_registry_rejects_duplicates_and_lists_names():
    reg = Registry("widget")

    @reg.register("alpha")
    def alpha():
        """The alpha widget."""

    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha", alpha)
    with pytest.raises(UnknownNameError, match="Did you mean 'alpha'.*Available: alpha"):
        reg.get("alpah")
    assert reg.describe("alpha") == "The alpha widget."
    assert "alpha" in reg and reg.names() == ["alpha"]


def test_every_shipped_recipe_validates():
    """recipes/**/*.yaml parse into a RunConfig and their method's typed config (unknown keys and
    bad values raise), so a typo in a recipe fails here, not on a user's GPU hours later."""
    from pathlib import Path

    import labelless.data  # noqa: F401 - registers the data sets
    import labelless.methods  # noqa: F401 - registers the methods
    from labelless.config import load_yaml
    from labelless.registry import DATASETS, METHODS
    from labelless.runner import RunConfig, method_config

    recipes = sorted((Path(__file__).resolve().parents[1] / "recipes").rglob("*.yaml"))
    assert len(recipes) >= 10
    for path in recipes:
        raw = load_yaml(path)
        raw.pop("runtime", None)
        given = [raw[k] for k in ("data", "eval_data") if raw.get(k)]
        raw.setdefault("data", "folder:root=given-on-the-command-line")  # LaTTe-CLIP's recipes
        cfg = from_dict(RunConfig, raw, where="")
        assert cfg.method in METHODS, path
        method_config(cfg.method, cfg.params)
        for spec in given:
            assert parse_spec(spec)[0] in DATASETS, (path, spec)
