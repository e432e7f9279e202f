"""The downstream task of the testbed: fine-grained classes in a shifted part of the world.

Each class is one ``(shape, colour, texture)`` combination of the main object and differs from
at least one other class in a single attribute. Class *names* are opaque fictional words
("glimmerwing") that never occur in the pre-training captions, so the name alone tells the text
encoder (almost) nothing, while the per-class *descriptions* (the analogue of CuPL descriptions)
state the attributes. Compared with pre-training the task has smaller objects in larger images,
more distractors and backgrounds the model never saw, so zero-shot accuracy is imperfect and
local crops see what the downsampled global view blurs.

:func:`build_task` writes the task to disk (images in per-split ImageFolder layout, a CoOp-style
``split.json``, ``classes.txt``, ``descriptions.json``, ``templates.json``, SIMULATED captions)
once per config hash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from PIL import Image

from labelless.config import to_dict
from labelless.errors import ConfigError
from labelless.testbed.cache import CODE_VERSION, config_hash, publish_dir, write_json
from labelless.testbed.world import (
    Scene,
    WorldConfig,
    render,
    sample_scene,
    scene_rng,
    simulate_caption,
    simulate_group_caption,
)

#: ``(name, shape, colour, texture)``. Every class has a neighbour that differs in one attribute
#: (glimmerwing/thornback: shape, glimmerwing/mossfin: texture, glimmerwing/duskmoth: colour, ...).
DEFAULT_CLASSES: tuple[tuple[str, str, str, str], ...] = (
    ("glimmerwing", "circle", "red", "striped"),
    ("thornback", "triangle", "red", "striped"),
    ("mossfin", "circle", "red", "dotted"),
    ("duskmoth", "circle", "blue", "striped"),
    ("emberscale", "square", "blue", "dotted"),
    ("frostpetal", "square", "green", "dotted"),
    ("quillhorn", "square", "green", "checkered"),
    ("velvetshade", "star", "yellow", "checkered"),
    ("brightspur", "star", "purple", "checkered"),
    ("cindertail", "hexagon", "purple", "checkered"),
)

SPLITS: tuple[str, ...] = ("train", "val", "test")
# Scene streams: stream 0 is pre-training, so task splits can never share a scene with it.
_SPLIT_STREAM = {"train": 1, "val": 2, "test": 3}
_CAPTION_STREAM = 10


def task_world() -> WorldConfig:
    """The downstream domain: 64 px images, objects smaller than in pre-training with 1-2
    distractors, unseen backgrounds. (Calibrated on the calibration script: smaller objects or
    more clutter push description zero-shot towards chance, where no pseudo-label method can
    learn.)"""
    return WorldConfig(
        image_size=64,
        backgrounds=("speckled", "cloudy"),
        size_range=(0.38, 0.5),
        n_distractors=(1, 2),
        distractor_size_range=(0.14, 0.28),
        seed=1,
    )


@dataclass
class TaskConfig:
    """The downstream classification task (every field is part of the task's cache key)."""

    classes: tuple[tuple[str, str, str, str], ...] = DEFAULT_CLASSES
    """``(name, shape, colour, texture)`` per class; the main object of an image of the class."""
    world: WorldConfig = field(default_factory=task_world)
    """Domain of the task images; ``world.seed`` seeds scenes, descriptions and captions."""
    n_train: int = 1500
    """Images in the (unlabelled, for adaptation) train split; classes are balanced."""
    n_val: int = 500
    """Images in the labelled validation split."""
    n_test: int = 1000
    """Images in the test split."""
    n_descriptions: int = 8
    """Description sentences per class (at most the number of description templates)."""
    templates: tuple[str, ...] = ("a photo of a {c}.",)
    """Class-name prompt templates written to ``templates.json`` (``{c}`` is the class name)."""
    caption_error_rate: float = 0.2
    """Per-attribute error rate of the SIMULATED per-image captions in ``captions.json``."""

    def __post_init__(self) -> None:
        self.classes = tuple(tuple(c) for c in self.classes)
        self.templates = tuple(self.templates)
        if isinstance(self.world, dict):
            self.world = WorldConfig(**self.world)
        names = [c[0] for c in self.classes]
        if len(self.classes) < 2 or len(set(names)) != len(names):
            raise ConfigError(f"TaskConfig.classes: need >= 2 distinct class names, got {names}")
        combos = [c[1:] for c in self.classes]
        if len(set(combos)) != len(combos):
            raise ConfigError("TaskConfig.classes: two classes have the same attributes")
        for c in self.classes:
            if len(c) != 4:
                raise ConfigError(
                    f"TaskConfig.classes: {c!r} is not (name, shape, colour, texture)"
                )
            if (
                c[1] not in self.world.shapes
                or c[2] not in self.world.colours
                or c[3] not in (self.world.textures)
            ):
                raise ConfigError(f"TaskConfig.classes: {c!r} uses attributes outside the world")
        for name in ("n_train", "n_val", "n_test"):
            if getattr(self, name) < 0:
                raise ConfigError(f"TaskConfig.{name}: must be >= 0")
        if not 1 <= self.n_descriptions <= len(_DESCRIPTION_TEMPLATES):
            raise ConfigError(
                f"TaskConfig.n_descriptions: must be in 1..{len(_DESCRIPTION_TEMPLATES)}"
            )
        if not all("{c}" in t for t in self.templates):
            raise ConfigError("TaskConfig.templates: every template needs a '{c}'")
        if not 0 <= self.caption_error_rate <= 1:
            raise ConfigError("TaskConfig.caption_error_rate: must be in [0, 1]")

    @property
    def classnames(self) -> list[str]:
        """Class names in label order."""
        return [c[0] for c in self.classes]

    def split_size(self, split: str) -> int:
        """Number of images in ``split``."""
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[split]


# ----------------------------------------------------------------------------- descriptions

_TEXTURE_NOUN = {
    "solid": ("a single flat colour", "one plain colour"),
    "striped": ("stripes", "horizontal stripes"),
    "dotted": ("dots", "spots", "polka dots"),
    "checkered": ("checks", "a checkerboard pattern"),
}
_TEXTURE_ADJ = {
    "solid": ("solid", "plain"),
    "striped": ("striped", "stripy"),
    "dotted": ("dotted", "spotted"),
    "checkered": ("checkered", "chequered"),
}
_DESCRIPTION_TEMPLATES: tuple[str, ...] = (
    "A {name} is a {colour} {shape} with {tex_noun}.",
    "{Name}: a small {tex_adj} {colour} {shape}.",
    # No "a photo of a {name}, ..." sentence: it would be the one closest to the label prompt
    # and would dominate WCA's description weights while being no more informative.
    "Every {name} looks like a {colour} {shape} covered in {tex_noun}.",
    "The {name} is {colour}, shaped like a {shape}, and its surface is {tex_adj}.",
    "You can spot a {name} by its {colour} colour, its {shape} outline and its {tex_adj} pattern.",
    "a {tex_adj} {colour} {shape}, the {name}, usually small and surrounded by other objects.",
    "{Name}s are {colour} {shape}s with a {tex_adj} pattern.",
    "a {name}: a small {colour} {shape} with {tex_noun} on a busy background.",
)


def class_descriptions(cfg: TaskConfig) -> dict[str, list[str]]:
    """Per-class description sentences (the CuPL analogue), deterministic in ``cfg``.

    Several templates with varied wording and synonyms; every sentence states the class's
    colour, shape and texture and repeats the (uninformative) class name, as LLM-written
    descriptions do (which also keeps WCA's description-vs-label-prompt weights from singling
    out sentences merely for containing the name).
    """
    out = {}
    for k, (name, shape, colour, texture) in enumerate(cfg.classes):
        rng = scene_rng(cfg.world.seed, 20, k)
        order = rng.permutation(len(_DESCRIPTION_TEMPLATES))[: cfg.n_descriptions]
        sentences = []

        def pick(opts: tuple[str, ...], rng=rng) -> str:
            return opts[int(rng.integers(0, len(opts)))]

        for t in sorted(order):
            sentences.append(
                _DESCRIPTION_TEMPLATES[t].format(
                    name=name,
                    Name=name.capitalize(),
                    colour=colour,
                    shape=shape,
                    tex_noun=pick(_TEXTURE_NOUN[texture]),
                    tex_adj=pick(_TEXTURE_ADJ[texture]),
                )
            )
        out[name] = sentences
    return out


# ----------------------------------------------------------------------------- scenes


def task_scene(cfg: TaskConfig, split: str, index: int) -> tuple[Scene, int]:
    """Scene and label of image ``index`` of ``split`` (a pure function of the arguments).

    Labels cycle through the classes so every split is balanced; distractors never take the
    attributes of any class, so the main object alone decides the label.
    """
    label = index % len(cfg.classes)
    forbidden = frozenset(c[1:] for c in cfg.classes)
    rng = scene_rng(cfg.world.seed, _SPLIT_STREAM[split], index)
    scene = sample_scene(cfg.world, rng, main=cfg.classes[label][1:], forbidden=forbidden)
    return scene, label


# ----------------------------------------------------------------------------- on disk


@dataclass
class TaskPaths:
    """Where a built task lives. ``root`` holds everything; images are under ``images_dir``."""

    root: Path
    hash: str

    @property
    def images_dir(self) -> Path:
        """``images/<split>/<class>/<split>_<index>.png``; ``images/<split>`` is an ImageFolder."""
        return self.root / "images"

    @property
    def split_json(self) -> Path:
        """CoOp-style ``{"train"|"val"|"test": [[relpath, label, classname], ...]}``; relpaths
        are relative to :attr:`images_dir`."""
        return self.root / "split.json"

    @property
    def classes_txt(self) -> Path:
        """One class name per line, in label order."""
        return self.root / "classes.txt"

    @property
    def descriptions_json(self) -> Path:
        """``{classname: [sentence, ...]}`` (CuPL-style class descriptions)."""
        return self.root / "descriptions.json"

    @property
    def templates_json(self) -> Path:
        """``["a photo of a {c}.", ...]``."""
        return self.root / "templates.json"

    @property
    def captions_json(self) -> Path:
        """SIMULATED per-image captions ``{relpath: [caption]}`` (see ``captions.meta.json``)."""
        return self.root / "captions.json"

    @property
    def scenes_json(self) -> Path:
        """Ground-truth scene of every image ``{relpath: scene dict}`` (for simulated captions)."""
        return self.root / "scenes.json"

    @property
    def task_json(self) -> Path:
        """Metadata: config, hash, code version, counts."""
        return self.root / "task.json"

    @cached_property
    def classnames(self) -> list[str]:
        """Class names in label order."""
        return self.classes_txt.read_text(encoding="utf-8").split("\n")[:-1]

    def split(self, name: str) -> list[tuple[str, int, str]]:
        """Records ``(relpath, label, classname)`` of split ``name``."""
        data = json.loads(self.split_json.read_text(encoding="utf-8"))
        return [tuple(r) for r in data[name]]

    @cached_property
    def scenes(self) -> dict[str, Scene]:
        """Ground-truth scenes keyed by relpath."""
        raw = json.loads(self.scenes_json.read_text(encoding="utf-8"))
        return {k: Scene.from_dict(v) for k, v in raw.items()}

    @cached_property
    def config(self) -> TaskConfig:
        """The :class:`TaskConfig` the task was built from."""
        raw = json.loads(self.task_json.read_text(encoding="utf-8"))["config"]
        return TaskConfig(world=WorldConfig(**raw.pop("world")), **raw)


def task_hash(cfg: TaskConfig) -> str:
    """Cache key of a task: every field of ``cfg``, the description wording and the code version."""
    return config_hash(cfg, [_DESCRIPTION_TEMPLATES, _TEXTURE_NOUN, _TEXTURE_ADJ])


def _write_task(cfg: TaskConfig, out: Path, progress: bool) -> None:
    from tqdm.auto import tqdm

    images = out / "images"
    split_data: dict[str, list] = {}
    scenes: dict[str, dict] = {}
    captions: dict[str, list[str]] = {}
    total = sum(cfg.split_size(s) for s in SPLITS)
    bar = tqdm(total=total, desc="testbed task images", disable=not progress, leave=False)
    for split in SPLITS:
        records = []
        for i in range(cfg.split_size(split)):
            scene, label = task_scene(cfg, split, i)
            name = cfg.classnames[label]
            rel = f"{split}/{name}/{split}_{i:05d}.png"
            path = images / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(render(scene, cfg.world)).save(path)
            records.append([rel, label, name])
            scenes[rel] = scene.to_dict()
            rng = scene_rng(cfg.world.seed, _CAPTION_STREAM + _SPLIT_STREAM[split], i)
            captions[rel] = [simulate_caption(scene, cfg.caption_error_rate, rng, cfg.world).text]
            bar.update(1)
        split_data[split] = records
    bar.close()
    write_json(out / "split.json", split_data)
    (out / "classes.txt").write_text("".join(n + "\n" for n in cfg.classnames), encoding="utf-8")
    write_json(out / "descriptions.json", class_descriptions(cfg))
    write_json(out / "templates.json", list(cfg.templates))
    write_json(out / "scenes.json", scenes)
    write_json(out / "captions.json", captions)
    write_json(
        out / "captions.meta.json",
        {
            "simulated": True,
            "note": "SIMULATED captions: generated from the ground-truth scene by "
            "labelless.testbed.world.simulate_caption with attribute errors; no captioning "
            "model was involved. They stand in for LMM captions in tests only.",
            "error_rate": cfg.caption_error_rate,
            "generator": "labelless.testbed.world.simulate_caption",
            "code_version": CODE_VERSION,
        },
    )
    write_json(
        out / "task.json",
        {
            "hash": task_hash(cfg),
            "code_version": CODE_VERSION,
            "config": to_dict(cfg),
            "counts": {s: len(split_data[s]) for s in SPLITS},
            "classes": [dict(zip(("name", "shape", "colour", "texture"), c)) for c in cfg.classes],
        },
    )


def build_task(
    cfg: TaskConfig | None = None, root: Path | str | None = None, progress: bool = False
) -> TaskPaths:
    """Write the task under ``root/<hash>/`` (skipped if it exists) and return its paths.

    ``root`` defaults to ``<default cache>/testbed/tasks``. The folder is built under a temporary
    name and renamed into place, so an interrupted build leaves nothing behind.
    """
    from labelless.testbed.cache import default_cache_dir

    cfg = cfg or TaskConfig()
    root = Path(root) if root is not None else default_cache_dir() / "testbed" / "tasks"
    h = task_hash(cfg)
    publish_dir(root / h, lambda tmp: _write_task(cfg, tmp, progress))
    return TaskPaths(root / h, h)


def group_captions(
    task: TaskPaths,
    groups: list[list[str]],
    error_rate: float | None = None,
    seed: int = 0,
) -> list[str]:
    """SIMULATED group captions: one caption per group of images (relpaths into the task), e.g.
    images sharing a pseudo-label. Describes the majority attributes of the groups' main objects
    with per-attribute errors at ``error_rate`` (default: the task's ``caption_error_rate``).
    Deterministic in ``(seed, group index)``."""
    rate = task.config.caption_error_rate if error_rate is None else error_rate
    out = []
    for g, members in enumerate(groups):
        try:
            scenes = [task.scenes[m] for m in members]
        except KeyError as e:
            raise ConfigError(
                f"group_captions: {e.args[0]!r} is not an image of the task"
            ) from None
        rng = scene_rng(seed, 30, g)
        out.append(simulate_group_caption(scenes, rate, rng, task.config.world).text)
    return out


__all__ = [
    "DEFAULT_CLASSES",
    "SPLITS",
    "TaskConfig",
    "TaskPaths",
    "build_task",
    "class_descriptions",
    "group_captions",
    "task_hash",
    "task_scene",
    "task_world",
]
