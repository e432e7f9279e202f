"""Draw suites of testbed tasks: new class lists, world seeds and difficulties.

A user's task is always one nobody tuned on. To measure whether a method's defaults keep their
gain on a new task, settings are chosen on a *dev suite* of tasks and claims are measured on a
*held-out suite* drawn the same way (``labelless testbed suite``; protocol in
``experiments/README.md``).

Each task has 10 classes built as 5 pairs; the two classes of a pair differ in one attribute,
the *deciding attribute* of the task's mode: ``texture``, ``shape``, ``colour`` or ``mixed``
(each pair its own). So every class has a one-attribute neighbour and the mode says what the
model must see to tell neighbours apart. The difficulty (object size, distractors, backgrounds)
is varied within bounds and adjusted until zero-shot with the class descriptions lands in
``zs_range`` on a sample of the task's *val* split (never its test split): a task near chance
leaves pseudo-labels nothing to learn from, a task near perfect leaves nothing to gain.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from labelless.errors import ConfigError
from labelless.testbed.task import TaskConfig, class_descriptions, task_scene, task_world
from labelless.testbed.world import COLOURS, SHAPES, TEXTURES, render

MODES: tuple[str, ...] = ("texture", "shape", "colour", "mixed")
_ATTR_INDEX = {"shape": 0, "colour": 1, "texture": 2}
_ATTR_VALUES = (SHAPES, tuple(COLOURS), TEXTURES)
_BACKGROUND_SETS = (("speckled",), ("cloudy",), ("speckled", "cloudy"))
# Opaque class names: no syllable is a word of the pre-training captions.
_HEADS = ("amber", "briar", "coral", "drift", "fern", "gloom", "haze", "ivy", "jade", "kestrel",
          "lumen", "mire", "nettle", "onyx", "pale", "rime", "sable", "tide", "umber", "vale",
          "wisp", "yarrow", "zephyr", "glim", "thorn", "moss", "dusk", "ember", "frost", "quill")
_TAILS = ("wing", "back", "fin", "moth", "scale", "petal", "horn", "shade", "spur", "tail",
          "crest", "fang", "claw", "wort", "shell", "root", "bloom", "gill", "mane", "snout")


@dataclass
class DrawnTask:
    """One task of a suite, with what the generator measured (val split only)."""

    name: str
    mode: str
    config: TaskConfig
    difficulty: float
    zero_shot_val: float
    """Top-1 (%) of zero-shot with the class descriptions on the first ``n`` val images."""
    n_val_measured: int


def draw_classes(rng: np.random.Generator, mode: str, n_classes: int = 10
                 ) -> tuple[tuple[str, str, str, str], ...]:
    """``n_classes`` (even) classes as pairs that differ in the mode's deciding attribute."""
    if mode not in MODES:
        raise ConfigError(f"suite mode '{mode}': choose from {', '.join(MODES)}")
    if n_classes < 2 or n_classes % 2:
        raise ConfigError(f"a suite task needs an even number of classes >= 2, got {n_classes}")
    combos: list[tuple[str, str, str]] = []
    while len(combos) < n_classes:
        attr = mode if mode != "mixed" else ("shape", "colour", "texture")[int(rng.integers(3))]
        a = _ATTR_INDEX[attr]
        base = [str(rng.choice(v)) for v in _ATTR_VALUES]
        other = [v for v in _ATTR_VALUES[a] if v != base[a]]
        partner = list(base)
        partner[a] = str(rng.choice(other))
        pair = [tuple(base), tuple(partner)]
        if any(c in combos for c in pair):
            continue
        combos += pair
    names: list[str] = []
    while len(names) < n_classes:
        name = str(rng.choice(_HEADS)) + str(rng.choice(_TAILS))
        if name not in names:
            names.append(name)
    return tuple((nm, *c) for nm, c in zip(names, combos))


def task_for(classes, seed: int, difficulty: float, backgrounds: tuple[str, ...],
             splits: tuple[int, int, int] = (1500, 500, 1000)) -> TaskConfig:
    """A task config at ``difficulty`` in [0, 1]: 0 = large objects, few distractors; 1 = small
    objects, up to 3 distractors. The shipped task sits near 0.5."""
    d = float(np.clip(difficulty, 0.0, 1.0))
    lo = round(0.52 - 0.24 * d, 3)  # main object diameter: 0.52 .. 0.28 of the image side
    n_dis = (0, 1) if d < 1 / 3 else (1, 2) if d < 2 / 3 else (1, 3)
    world = replace(task_world(), seed=int(seed), backgrounds=backgrounds,
                    size_range=(lo, round(lo + 0.12, 3)), n_distractors=n_dis)
    return TaskConfig(classes=tuple(classes), world=world, n_train=splits[0], n_val=splits[1],
                      n_test=splits[2])


def zero_shot_val(cfg: TaskConfig, model, n: int = 300) -> float:
    """Top-1 (%) of zero-shot with the class descriptions on the first ``n`` val images of
    ``cfg``, rendered in memory. ``model`` is ``(open_clip model, preprocess, tokenizer)``."""
    import torch
    from PIL import Image

    from labelless.testbed.calibrate import class_prototypes, encode_images

    clip, preprocess, tokenizer = model
    n = min(n, cfg.n_val)
    images, labels = [], []
    for i in range(n):
        scene, label = task_scene(cfg, "val", i)
        images.append(preprocess(Image.fromarray(render(scene, cfg.world))))
        labels.append(label)
    with torch.no_grad():
        x = encode_images(clip, torch.stack(images))
        protos = class_prototypes(clip, tokenizer, class_descriptions(cfg), cfg.classnames)
    pred = (x @ protos.T).argmax(1)
    return round(100 * float((pred == torch.tensor(labels)).float().mean()), 1)


def draw_suite(seed: int, n: int, model, prefix: str = "task", zs_range=(25.0, 65.0),
               n_measure: int = 300, max_tries: int = 12, log=print) -> list[DrawnTask]:
    """Draw ``n`` tasks (modes cycle through :data:`MODES`) whose zero-shot top-1 with
    descriptions on ``n_measure`` val images lies in ``zs_range``; deterministic in ``seed``."""
    rng = np.random.default_rng([int(seed), 7919])
    out: list[DrawnTask] = []
    for i in range(n):
        mode = MODES[i % len(MODES)]
        for attempt in range(max_tries):
            classes = draw_classes(rng, mode)
            world_seed = int(rng.integers(100, 1_000_000))
            backgrounds = _BACKGROUND_SETS[int(rng.integers(len(_BACKGROUND_SETS)))]
            difficulty = float(rng.uniform(0.2, 0.8))
            zs = None
            for _ in range(3):  # move the difficulty towards the range, then redraw the classes
                cfg = task_for(classes, world_seed, difficulty, backgrounds)
                zs = zero_shot_val(cfg, model, n_measure)
                if zs_range[0] <= zs <= zs_range[1]:
                    break
                step = 0.3 if zs < zs_range[0] else -0.3
                difficulty = float(np.clip(difficulty - step, 0.0, 1.0))
            log(f"  {prefix}-{i + 1} ({mode}) try {attempt + 1}: difficulty {difficulty:.2f}, "
                f"zero-shot val {zs:.1f}%")
            if zs_range[0] <= zs <= zs_range[1]:
                out.append(DrawnTask(f"{prefix}-{i + 1}-{mode}", mode, cfg, round(difficulty, 3), zs,
                                     min(n_measure, cfg.n_val)))
                break
        else:
            raise ConfigError(f"suite seed {seed}: no {mode} task with zero-shot in {zs_range} after "
                              f"{max_tries} draws; widen the range or try another seed")
    return out


def write_suite(tasks: list[DrawnTask], out_dir: str | Path, seed: int) -> list[Path]:
    """One task file per drawn task under ``out_dir`` (notes hold what the generator measured)."""
    from labelless.testbed.taskfile import write_task_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for t in tasks:
        notes = {"suite_seed": seed, "mode": t.mode, "difficulty": t.difficulty,
                 "zero_shot_descriptions_val": t.zero_shot_val, "measured_on_val_images": t.n_val_measured}
        header = (f"Testbed task drawn by `labelless testbed suite --seed {seed}`: "
                  f"deciding attribute {t.mode}.")
        paths.append(write_task_file(t.config, out_dir / f"{t.name}.yaml", name=t.name, notes=notes,
                                     header=header))
    return paths


__all__ = ["MODES", "DrawnTask", "draw_classes", "draw_suite", "task_for", "write_suite",
           "zero_shot_val"]
