"""SIMULATED group captions of the testbed's train split, as LaTTe-CLIP consumes them.

On real data ``labelless describe-images --groups-out`` asks an LMM to describe groups of images
that share a zero-shot pseudo-label. On the testbed the same plan is made (zero-shot
pseudo-labels of the frozen tiny CLIP with the class descriptions, :func:`plan_groups`) and the
captions are SIMULATED from the scenes' ground-truth attributes with the task's caption error
rate (:func:`labelless.testbed.group_captions`). The file has the ``describe-images`` format:
``{"groups": [{"class": ..., "images": [...], "caption": ...}, ...]}``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from labelless.testbed.build import Testbed
from labelless.testbed.task import TaskPaths, group_captions
from labelless.utils.io import atomic_write_json


def write_group_captions(tb: Testbed, out_path: str | Path, group_size: int = 4, seed: int = 0,
                         batch_size: int = 128, task: TaskPaths | None = None) -> Path:
    """Plan groups from zero-shot pseudo-labels of the train split of ``task`` (default: the
    testbed's own task), simulate their captions and write them atomically to ``out_path``;
    returns the path."""
    from labelless.backbones import load_backbone
    from labelless.data.benchmarks import read_zhou_split
    from labelless.data.features import extract_features
    from labelless.text.encode import encode_texts
    from labelless.textgen import plan_groups
    from labelless.views import build_view

    task = task or tb.task
    backbone = load_backbone(tb.spec)
    train = read_zhou_split(task.split_json, task.images_dir, "train", name="testbed")
    classnames = list(train.classnames)
    descriptions = json.loads(task.descriptions_json.read_text())
    with torch.no_grad():
        feats = extract_features(backbone, train, build_view("global", backbone), seed=seed,
                                 batch_size=batch_size, progress=False)
        protos = encode_texts(backbone, descriptions).mean_embeddings()  # (C, d)
        zs = (feats.embeds[:, 0].to(protos) @ protos.T).argmax(-1)  # (N,)
    rel = [str(Path(p).relative_to(task.images_dir)) for p in train.paths]
    groups = plan_groups(rel, [classnames[int(k)] for k in zs], group_size=group_size,
                         per_class=None, seed=seed)
    captions = group_captions(task, [g["images"] for g in groups], seed=seed)
    doc = {"simulated": True, "groups": [{**g, "caption": c} for g, c in zip(groups, captions)]}
    return atomic_write_json(out_path, doc)


def resolve_testbed_files(params: dict, work_dir: str | Path, task: str | None = None) -> dict:
    """Replace the value ``"testbed"`` of a method's ``captions`` / ``groups`` setting by the
    SIMULATED per-image captions file of the testbed task ``task`` (a task file; None or '' is
    the shipped task: pass the ``task=`` of the run's data spec, so captions and data are the
    same task) / a group-captions file written (once per task) to
    ``work_dir/testbed-groups-<task hash>.json``. Other params pass through unchanged."""
    wanted = [k for k in ("captions", "groups") if params.get(k) == "testbed"]
    if not wanted:
        return params
    from labelless.data.testbed import _model, testbed_task

    paths = testbed_task(task or None)
    out = dict(params)
    if "captions" in wanted:
        out["captions"] = str(paths.captions_json)
    if "groups" in wanted:
        path = Path(work_dir) / f"testbed-groups-{paths.hash}.json"
        if not path.exists():
            write_group_captions(_model(), path, task=paths)
        out["groups"] = str(path)
    return out


__all__ = ["resolve_testbed_files", "write_group_captions"]
