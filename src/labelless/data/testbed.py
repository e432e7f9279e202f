"""The in-project testbed as an ordinary data set, backbone and text source.

So that every command and experiment file can name it like real data:

    --model testbed                 the pre-trained tiny CLIP (built or reused from the cache)
    --data testbed:split=train      the shipped task's images (train | val | test)
    --data testbed:task=my_task.yaml,split=train    a task file's images (labelless.testbed.taskfile)
    --texts testbed:what=descriptions   its class descriptions (or what=templates | names | coder)
    --texts testbed:task=my_task.yaml,what=descriptions

The pre-trained model does not depend on the task: one checkpoint serves every task. The first
use builds whatever is missing (minutes on 2 CPU cores for the model, seconds for a task; then
cached by config hash, see :func:`labelless.testbed.ensure_testbed`).
"""

from __future__ import annotations

import sys
from functools import lru_cache

from labelless.errors import DataError, TextSourceError
from labelless.registry import BACKBONES, DATASETS, TEXT_SOURCES


@lru_cache(maxsize=1)
def _model():
    from labelless.testbed import ensure_testbed

    return ensure_testbed()


_TASKS: dict = {}


def testbed_task(task: str | None = None):
    """The built :class:`~labelless.testbed.TaskPaths` of a task file (None: the shipped task).

    The file is re-read on every call (cheap), so an edited file is never served from a stale
    cache; the built task is cached by its config hash.
    """
    from labelless.testbed.cache import default_cache_dir
    from labelless.testbed.task import build_task, task_hash
    from labelless.testbed.taskfile import load_task_file

    if not task:
        return _model().task
    cfg = load_task_file(task)
    key = (str(default_cache_dir()), task_hash(cfg))
    if key not in _TASKS:
        _TASKS[key] = build_task(cfg, default_cache_dir() / "testbed" / "tasks",
                                  progress=sys.stderr.isatty())
    return _TASKS[key]


def task_of_spec(spec: str | None) -> str | None:
    """The ``task=`` option of a ``testbed:`` data spec ('' for the shipped task); None when
    ``spec`` is not a testbed spec."""
    from labelless.spec import parse_spec

    if not spec or not str(spec).startswith("testbed"):
        return None
    name, opts = parse_spec(spec, "data")
    return opts.get("task", "") if name == "testbed" else None


@DATASETS.register("testbed")
def testbed_dataset(split: str = "test", task: str = "", missing: str = "error"):
    """The testbed's fine-grained task (labelless.testbed), split=train|val|test; task=FILE.yaml
    picks a task file (default: the shipped task)."""
    from labelless.data.benchmarks import read_zhou_split

    if split not in ("train", "val", "test"):
        raise DataError(f"testbed: split must be train, val or test, got '{split}'")
    paths = testbed_task(task or None)
    ds = read_zhou_split(paths.split_json, paths.images_dir, split, name="testbed", missing=missing)
    ds.meta["task_hash"] = paths.hash
    if task:
        ds.meta["task_file"] = task
    return ds


@BACKBONES.register("testbed")
def testbed_backbone(rest: str = "", device="cpu"):
    """The testbed's tiny CLIP, pre-trained in-project on its procedural world (--model testbed)."""
    from labelless.backbones.openclip import OpenClipBackbone

    tb = _model()
    return OpenClipBackbone(f"{tb.model_name}:{tb.checkpoint}", device=device)


@TEXT_SOURCES.register("testbed")
def testbed_texts(classnames: list[str], what: str = "descriptions", task: str = "") -> dict[str, list[str]]:
    """The testbed task's class texts: what=descriptions (default), templates, names or coder
    (SIMULATED CODER texts, :mod:`labelless.testbed.coder`); task=FILE.yaml picks a task file
    (default: the shipped task)."""
    import json

    from labelless.text import build_texts

    paths = testbed_task(task or None)
    if what == "descriptions":
        return build_texts(f"descriptions:path={paths.descriptions_json}", classnames)
    if what == "templates":
        templates = json.loads(paths.templates_json.read_text())
        return {c: [t.replace("{c}", c).replace("{}", c) for t in templates] for c in classnames}
    if what == "names":
        return {c: [c] for c in classnames}
    if what == "coder":
        from labelless.testbed.coder import coder_texts

        texts = coder_texts(paths.config)
        unknown = [c for c in classnames if c not in texts]
        if unknown:
            raise TextSourceError(f"testbed texts: the task has no class {unknown[0]!r} (classes: {', '.join(texts)})")
        return {c: texts[c] for c in classnames}
    raise TextSourceError(f"testbed texts: what= must be descriptions, templates, names or coder, got '{what}'")
