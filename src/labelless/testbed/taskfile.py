"""Testbed tasks as YAML files: read, validate and write them.

A task file describes one downstream task of the testbed world; the pre-trained tiny CLIP does
not depend on it, so one checkpoint serves every task::

    name: texture-pairs-1          # optional label (not part of the task's identity)
    seed: 4711                     # world seed: scenes, descriptions and captions
    classes:                       # name, shape, colour, texture (labelless testbed attributes)
      - {name: glimmerwing, shape: circle, colour: red, texture: striped}
      - {name: mossfin, shape: circle, colour: red, texture: dotted}
      ...
    object_size: [0.38, 0.5]       # main object diameter, fraction of the image side
    distractors: [1, 2]            # inclusive range of distractor objects per image
    distractor_size: [0.14, 0.28]
    backgrounds: [speckled, cloudy]
    splits: {train: 1500, val: 500, test: 1000}
    caption_error_rate: 0.2        # SIMULATED captions: per-attribute error rate
    n_descriptions: 8              # description sentences per class
    notes: {...}                   # free-form, ignored (e.g. the generator's measurements)

Every key but ``seed`` and ``classes`` is optional and defaults to the shipped task's value.
Every class needs a neighbour that differs in exactly one attribute (the task is fine-grained
by construction). :func:`load_task_file` turns a file into a
:class:`~labelless.testbed.task.TaskConfig`; errors name the file, the field and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labelless.errors import ConfigError, did_you_mean
from labelless.testbed.task import _DESCRIPTION_TEMPLATES, TaskConfig, task_world
from labelless.testbed.world import BACKGROUNDS, COLOURS, SHAPES, TEXTURES, WorldConfig

_KEYS = ("name", "description", "seed", "classes", "image_size", "object_size", "distractors",
         "distractor_size", "backgrounds", "splits", "caption_error_rate", "n_descriptions",
         "templates", "notes")
_CLASS_KEYS = ("name", "shape", "colour", "texture")
_ATTRS = {"shape": SHAPES, "colour": tuple(COLOURS), "texture": TEXTURES}
#: Bounds a task file must respect (the renderer and the learning methods were built for these).
LIMITS = {
    "image_size": (32, 256),
    "object_size": (0.15, 0.9),
    "distractor_size": (0.05, 0.5),
    "distractors": (0, 4),
    "split": (1, 100_000),
    "classes": (2, 64),
}


def one_attribute_neighbours(classes) -> dict[str, list[str]]:
    """``{class name: [names of classes that differ from it in exactly one attribute]}`` for
    ``(name, shape, colour, texture)`` tuples."""
    out = {}
    for c in classes:
        out[c[0]] = [o[0] for o in classes
                     if o[0] != c[0] and sum(a != b for a, b in zip(c[1:], o[1:])) == 1]
    return out


def _fail(where: str, msg: str) -> ConfigError:
    return ConfigError(f"task file {where}: {msg}")


def _range(raw: dict, key: str, default, kind, where: str) -> tuple:
    value = raw.get(key, default)
    lo_lim, hi_lim = LIMITS[key]
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise _fail(where, f"'{key}' must be a [low, high] pair, got {value!r}")
    try:
        lo, hi = (kind(v) for v in value)
    except (TypeError, ValueError):
        raise _fail(where, f"'{key}' must hold two numbers, got {value!r}") from None
    if not lo_lim <= lo <= hi <= hi_lim:
        raise _fail(where, f"'{key}' {[lo, hi]} is out of range: need {lo_lim} <= low <= high "
                           f"<= {hi_lim}")
    return lo, hi


def _classes(raw: Any, where: str) -> tuple[tuple[str, str, str, str], ...]:
    if not isinstance(raw, list) or not raw:
        raise _fail(where, "'classes' must be a list of {name, shape, colour, texture}")
    lo, hi = LIMITS["classes"]
    if not lo <= len(raw) <= hi:
        raise _fail(where, f"'classes' has {len(raw)} entries; give {lo} to {hi}")
    out = []
    for i, c in enumerate(raw):
        at = f"classes[{i}]"
        if not isinstance(c, dict):
            raise _fail(where, f"{at} must be a mapping {{name, shape, colour, texture}}, got {c!r}")
        for k in c:
            if k not in _CLASS_KEYS:
                raise _fail(where, f"{at} has an unknown key '{k}'.{did_you_mean(k, _CLASS_KEYS)} "
                                   f"Keys: {', '.join(_CLASS_KEYS)}")
        missing = [k for k in _CLASS_KEYS if not c.get(k)]
        if missing:
            raise _fail(where, f"{at} lacks {', '.join(missing)}")
        for attr, known in _ATTRS.items():
            if c[attr] not in known:
                raise _fail(where, f"{at}.{attr} '{c[attr]}' is not a {attr} of the testbed world."
                                   f"{did_you_mean(c[attr], known)} Choose from {', '.join(known)}")
        out.append((str(c["name"]), c["shape"], c["colour"], c["texture"]))
    names = [c[0] for c in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise _fail(where, f"class names must be distinct; repeated: {', '.join(dup)}")
    combos: dict[tuple, str] = {}
    for c in out:
        if c[1:] in combos:
            raise _fail(where, f"classes '{combos[c[1:]]}' and '{c[0]}' have the same attributes "
                               f"{'/'.join(c[1:])}: change the shape, colour or texture of one")
        combos[c[1:]] = c[0]
    lonely = [n for n, nb in one_attribute_neighbours(out).items() if not nb]
    if lonely:
        raise _fail(where, f"class(es) {', '.join(lonely)} have no neighbour that differs in exactly "
                           "one attribute (shape, colour or texture); add such a class or change "
                           "one, so the task stays fine-grained")
    return tuple(out)


def task_from_dict(raw: Any, where: str = "<dict>") -> TaskConfig:
    """Validate the content of a task file and build its :class:`TaskConfig`."""
    if not isinstance(raw, dict):
        raise _fail(where, "must be a YAML mapping (seed, classes, ...)")
    for k in raw:
        if k not in _KEYS:
            raise _fail(where, f"unknown key '{k}'.{did_you_mean(k, _KEYS)} Keys: {', '.join(_KEYS)}")
    for k in ("seed", "classes"):
        if k not in raw:
            raise _fail(where, f"'{k}' is required")
    seed = raw["seed"]
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise _fail(where, f"'seed' must be a non-negative integer, got {seed!r}")
    base = task_world()
    default = TaskConfig()
    image_size = raw.get("image_size", base.image_size)
    lo, hi = LIMITS["image_size"]
    if not isinstance(image_size, int) or not lo <= image_size <= hi:
        raise _fail(where, f"'image_size' must be an integer in {lo}..{hi}, got {image_size!r}")
    backgrounds = raw.get("backgrounds", list(base.backgrounds))
    if isinstance(backgrounds, str):
        backgrounds = [backgrounds]
    if not isinstance(backgrounds, list) or not backgrounds:
        raise _fail(where, "'backgrounds' must be a non-empty list")
    for b in backgrounds:
        if b not in BACKGROUNDS:
            raise _fail(where, f"background '{b}' is unknown.{did_you_mean(b, BACKGROUNDS)} "
                               f"Choose from {', '.join(BACKGROUNDS)}")
    splits = raw.get("splits", {})
    if not isinstance(splits, dict):
        raise _fail(where, "'splits' must be a mapping {train: N, val: N, test: N}")
    sizes = {}
    for k, v in splits.items():
        if k not in ("train", "val", "test"):
            raise _fail(where, f"splits has an unknown split '{k}'; use train, val, test")
        lo, hi = LIMITS["split"]
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise _fail(where, f"splits.{k} must be an integer in {lo}..{hi}, got {v!r}")
        sizes[f"n_{k}"] = v
    rate = raw.get("caption_error_rate", default.caption_error_rate)
    if not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise _fail(where, f"'caption_error_rate' must be a number in [0, 1], got {rate!r}")
    n_desc = raw.get("n_descriptions", default.n_descriptions)
    if not isinstance(n_desc, int) or not 1 <= n_desc <= len(_DESCRIPTION_TEMPLATES):
        raise _fail(where, f"'n_descriptions' must be an integer in 1..{len(_DESCRIPTION_TEMPLATES)}, "
                           f"got {n_desc!r}")
    templates = raw.get("templates", list(default.templates))
    if (not isinstance(templates, list) or not templates
            or not all(isinstance(t, str) and "{c}" in t for t in templates)):
        raise _fail(where, "'templates' must be a list of prompts that each contain '{c}'")
    world = WorldConfig(
        image_size=image_size,
        backgrounds=tuple(backgrounds),
        size_range=_range(raw, "object_size", base.size_range, float, where),
        n_distractors=_range(raw, "distractors", base.n_distractors, int, where),
        distractor_size_range=_range(raw, "distractor_size", base.distractor_size_range, float, where),
        seed=seed,
    )
    return TaskConfig(classes=_classes(raw["classes"], where), world=world,
                      caption_error_rate=float(rate), n_descriptions=n_desc,
                      templates=tuple(templates), **sizes)


def load_task_file(path: str | Path) -> TaskConfig:
    """Read and validate a task file (see the module docstring)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"task file '{path}' does not exist (write one, or draw a suite with "
                          "'labelless testbed suite')")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"task file '{path}' is not valid YAML: {e}") from None
    return task_from_dict(raw, str(path))


def task_to_dict(cfg: TaskConfig, name: str | None = None, notes: dict | None = None) -> dict:
    """The task-file content of ``cfg`` (every field written out; inverse of
    :func:`task_from_dict` for configs whose world uses the task world's fixed knobs)."""
    w = cfg.world
    out: dict[str, Any] = {"name": name} if name else {}
    out.update(
        seed=w.seed,
        classes=[dict(zip(_CLASS_KEYS, c)) for c in cfg.classes],
        image_size=w.image_size,
        object_size=list(w.size_range),
        distractors=list(w.n_distractors),
        distractor_size=list(w.distractor_size_range),
        backgrounds=list(w.backgrounds),
        splits={"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test},
        caption_error_rate=cfg.caption_error_rate,
        n_descriptions=cfg.n_descriptions,
        templates=list(cfg.templates),
    )
    if notes:
        out["notes"] = notes
    return out


def write_task_file(cfg: TaskConfig, path: str | Path, name: str | None = None,
                    notes: dict | None = None, header: str = "") -> Path:
    """Write ``cfg`` as a task file (classes one per line, readable by hand)."""
    import yaml

    from labelless.utils.io import atomic_write_text

    d = task_to_dict(cfg, name, notes)
    classes = d.pop("classes")
    notes_d = d.pop("notes", None)
    lines = [f"# {h}" if h else "#" for h in header.splitlines()] if header else []
    lines.append(yaml.safe_dump({k: v for k, v in d.items() if k in ("name", "seed")},
                                sort_keys=False).rstrip())
    lines.append("classes:")
    lines += ["  - {" + ", ".join(f"{k}: {c[k]}" for k in _CLASS_KEYS) + "}" for c in classes]
    rest = {k: v for k, v in d.items() if k not in ("name", "seed")}
    lines.append(yaml.safe_dump(rest, sort_keys=False, default_flow_style=None).rstrip())
    if notes_d:
        lines.append(yaml.safe_dump({"notes": notes_d}, sort_keys=False,
                                    default_flow_style=None).rstrip())
    text = "\n".join(lines) + "\n"
    if task_from_dict(yaml.safe_load(text), str(path)) != cfg:
        raise ConfigError(f"task file {path}: the written file does not read back as the task")
    return atomic_write_text(Path(path), text)


__all__ = ["LIMITS", "load_task_file", "one_attribute_neighbours", "task_from_dict",
           "task_to_dict", "write_task_file"]
