"""The in-project testbed as an ordinary data set, backbone and text source.

So that every command and experiment file can name it like real data:

    --model testbed                 the pre-trained tiny CLIP (built or reused from the cache)
    --data testbed:split=train      the downstream task's images (train | val | test)
    --texts testbed:what=descriptions   its class descriptions (or what=templates | names)

The first use builds whatever is missing (minutes on 2 CPU cores, then cached by config hash;
see :func:`labelless.testbed.ensure_testbed`).
"""

from __future__ import annotations

from functools import lru_cache

from labelless.errors import DataError, TextSourceError
from labelless.registry import BACKBONES, DATASETS, TEXT_SOURCES


@lru_cache(maxsize=1)
def _testbed():
    from labelless.testbed import ensure_testbed

    return ensure_testbed()


@DATASETS.register("testbed")
def testbed_dataset(split: str = "test", missing: str = "error"):
    """The testbed's fine-grained task (labelless.testbed), split=train|val|test."""
    from labelless.data.benchmarks import read_zhou_split

    if split not in ("train", "val", "test"):
        raise DataError(f"testbed: split must be train, val or test, got '{split}'")
    task = _testbed().task
    ds = read_zhou_split(task.split_json, task.images_dir, split, name="testbed", missing=missing)
    ds.meta["task_hash"] = task.hash
    return ds


@BACKBONES.register("testbed")
def testbed_backbone(rest: str = "", device="cpu"):
    """The testbed's tiny CLIP, pre-trained in-project on its procedural world (--model testbed)."""
    from labelless.backbones.openclip import OpenClipBackbone

    tb = _testbed()
    return OpenClipBackbone(f"{tb.model_name}:{tb.checkpoint}", device=device)


@TEXT_SOURCES.register("testbed")
def testbed_texts(classnames: list[str], what: str = "descriptions") -> dict[str, list[str]]:
    """The testbed task's class texts: what=descriptions (default), templates or names."""
    import json

    from labelless.text import build_texts

    task = _testbed().task
    if what == "descriptions":
        return build_texts(f"descriptions:path={task.descriptions_json}", classnames)
    if what == "templates":
        templates = json.loads(task.templates_json.read_text())
        return {c: [t.replace("{c}", c).replace("{}", c) for t in templates] for c in classnames}
    if what == "names":
        return {c: [c] for c in classnames}
    raise TextSourceError(f"testbed texts: what= must be descriptions, templates or names, got '{what}'")
