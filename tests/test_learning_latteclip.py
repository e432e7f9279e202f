"""LaTTe-CLIP learns on the testbed (pre-trained tiny CLIP, fine-grained task, SIMULATED
captions): after label-free fine-tuning it beats zero-shot with the class descriptions.

The testbed's class names are opaque words, so the class texts that carry meaning are the
descriptions: they are the label texts here (prototype initialisation and the label text of the
mixer), the analogue of "a photo of a {c}." with a real class name. Hyper-parameters were chosen
on the val split only (lr 3e-5 / 1e-4 / 3e-4 x 8 epochs: 51.8 / 51.8 / 51.4 val top-1 against 44.8
zero-shot); the assertion is on the test split. The paper's Table 2 claim that image and group
captions help over class texts alone did NOT hold reliably on the testbed (val: +1.4, +0.8, -2.6
at those learning rates; the mixer gives the texts a 1% share, alpha = 0.01), so it is not asserted.
"""

from __future__ import annotations

import json
import time

import torch

from labelless.backbones import load_backbone
from labelless.config import from_dict
from labelless.data.benchmarks import read_zhou_split
from labelless.demo import LATTE_TESTBED_OPTIM  # the testbed recipe, chosen on val
from labelless.methods import latteclip as L
from labelless.methods.base import FitContext, Runtime
from labelless.methods.zeroshot import encode_texts


def _acc(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (logits.argmax(-1) == labels).float().mean().item()


def test_latteclip_beats_zero_shot_with_descriptions(tmp_path):
    from labelless.testbed import ensure_testbed
    from labelless.testbed.groups import write_group_captions

    t0 = time.time()
    tb = ensure_testbed(progress=False)
    task = tb.task
    train = read_zhou_split(task.split_json, task.images_dir, "train", name="testbed")
    test = read_zhou_split(task.split_json, task.images_dir, "test", name="testbed")
    classnames = list(train.classnames)
    descriptions = json.loads(task.descriptions_json.read_text())
    groups = write_group_captions(tb, tmp_path / "groups.json")
    ctx = FitContext(
        backbone=load_backbone(tb.spec), train=train, classnames=classnames, texts=descriptions,
        label_texts=descriptions, rt=Runtime(device="cpu", batch_size=128, progress=False, cache_dir=None, seed=0),
        out_dir=tmp_path / "latte",
    )
    zs = L.PrototypeTextClassifier(classnames, ctx.backbone.spec, {},
                                   encode_texts(ctx.backbone, descriptions).mean_embeddings())
    zs_acc = _acc(zs.predict(ctx.backbone, test, ctx.rt), test.labels)
    cfg = from_dict(L.LatteCLIPConfig, {"captions": str(task.captions_json), "groups": str(groups),
                                        "optim": LATTE_TESTBED_OPTIM})
    fit = L.LatteCLIP(cfg).fit(ctx)
    acc = _acc(fit.classifier.predict(ctx.backbone, test, ctx.rt), test.labels)
    print(f"\ntest top-1: zero-shot descriptions {zs_acc:.1f}, LaTTe-CLIP {acc:.1f} ({time.time() - t0:.0f}s)")
    assert acc > zs_acc + 3.0


def test_testbed_caption_files_resolve_for_runs(tmp_path):
    """``captions: testbed`` / ``groups: testbed`` in a run's params (demo, bench experiments)
    become the task's simulated captions and a group file planned from zero-shot labels."""
    from labelless.methods.latteclip import load_group_pool
    from labelless.testbed import ensure_testbed
    from labelless.testbed.groups import resolve_testbed_files
    from labelless.text import load_captions

    tb = ensure_testbed(progress=False)
    params = resolve_testbed_files({"captions": "testbed", "groups": "testbed", "alpha": 0.01}, tmp_path)
    groups = tmp_path / f"testbed-groups-{tb.task.hash}.json"  # one file per task
    assert params["alpha"] == 0.01 and params["groups"] == str(groups)
    doc = json.loads(groups.read_text())
    assert doc["simulated"] is True
    pool = load_group_pool(params["groups"], tb.task.config.classnames)
    assert sum(len(v) for v in pool.values()) == tb.task.config.n_train  # one group per image
    assert len(load_captions(params["captions"])) > 0
