"""No training method may learn from labels: every method, fitted on a labelled data set and on
the same images with every label replaced by -1 (unknown), trains bitwise identical weights.

Run A sees every label a run can see: the train split keeps its labels (methods log pseudo-label
accuracy against them, which is allowed) and, where a method takes one, the labelled monitoring set
(``FitContext.monitor``: logged, never used to select). Run B has no label anywhere. The tuned
backbone parameters, the classifier tensors and, for CoFT, every round's phase-1 prompts, adapter
and head must be equal bitwise. The region probe has its own test in test_learning_regions.py.

Each test also checks that it could fail: run A logged a pseudo-label accuracy (the labels reached
the method) below 100% (a method that trained on the labels instead of its pseudo-labels would see
other targets), and training moved the weights. It uses the testbed's pre-trained tiny CLIP, not a
random model, on 40 train images (4 per class) for 1-2 epochs: a random model puts every image in
one class, and a leak through class counts (CoFT's class-balanced phase 2) then changes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from labelless.backbones import load_backbone
from labelless.config import from_dict
from labelless.data import build_dataset
from labelless.methods import latteclip as L
from labelless.methods.base import FitContext, Runtime
from labelless.methods.coft import CoFT, CoFTConfig, CoFTPlus, CoFTPlusConfig
from labelless.methods.fair import Fair, FairConfig
from labelless.testbed import ensure_testbed
from labelless.text import build_texts

# the code paths of the shipped testbed recipes (top-K phase-1 selection, class-balanced phase 2,
# zero-shot head, descriptions in the prompts), at toy sizes
COFT_SMALL = {"n_ctx": 3, "vpt_tokens": 2, "warmup_epochs": 0, "head_init": "zeroshot", "text_source": "texts",
              "prompt_class_text": "text", "phase1_select": "top_k", "phase1_top_k": 2,
              "phase2_balance": "reweight", "moco_queue": 16,
              "phase1": {"epochs": 1, "batch_size": 8}, "phase2": {"epochs": 1, "batch_size": 8, "lr": 1e-3}}
LATTE_OPTIM = {"lr": 1e-3, "epochs": 1, "batch_size": 8, "warmup_steps": 1}
PER_CLASS = 4


@pytest.fixture(scope="module")
def task():
    """The testbed (spec, captions file), 4 labelled train images per class, the descriptions."""
    tb = ensure_testbed(progress=False)
    full = build_dataset("testbed:split=train")
    first: dict[int, list[int]] = {}
    for i, (_, y) in enumerate(full.records):
        first.setdefault(y, [])
        if len(first[y]) < PER_CLASS:
            first[y].append(i)
    train = full.subset(sorted(i for idx in first.values() for i in idx))
    assert len(train) == PER_CLASS * len(train.classnames)
    return tb, train, build_texts("testbed:what=descriptions", list(train.classnames))


def _method(name: str, root: Path, tb, train):
    if name == "fair":
        # 2 epochs: the monitoring pass after epoch 1 comes before more training
        return Fair(from_dict(FairConfig, {
            "n_crops": 4, "k": 2, "randaug_n": 0, "monitor_eval": True,
            "optim": {"epochs": 2, "batch_size": 8, "lr": 1e-2, "min_lr": 0.0}}))
    if name == "latteclip":
        groups = {"groups": [{"class": c, "caption": f"several images of {c}"} for c in train.classnames]}
        (root / "groups.json").write_text(json.dumps(groups))
        return L.LatteCLIP(from_dict(L.LatteCLIPConfig, {
            "captions": str(tb.task.captions_json), "groups": str(root / "groups.json"), "optim": LATTE_OPTIM}))
    if name == "flyp-pl":
        return L.FlypPL(from_dict(L.FlypPLConfig, {"optim": LATTE_OPTIM}))
    if name == "coft":
        return CoFT(from_dict(CoFTConfig, COFT_SMALL))
    if name == "coft+":
        return CoFTPlus(from_dict(CoFTPlusConfig, COFT_SMALL))
    raise AssertionError(name)


def _label_accuracies(name: str, fit) -> list[float]:
    """The pseudo-label accuracies (%) a run logged against the train labels (empty: none)."""
    if name.startswith("coft"):
        return [100 * r["pseudo"]["label_acc"] for r in fit.info["coft"]["rounds"] if "label_acc" in r["pseudo"]]
    keys = {"fair": ["pl_acc"], "flyp-pl": ["pl_acc"], "latteclip": ["pl_acc_ft", "pl_acc_zs"]}[name]
    return [row[k] for row in fit.history for k in keys if k in row]


def _fit(name: str, task, train, monitor, root: Path):
    """Fit ``name`` from the testbed checkpoint; returns (weights, base weights of the tuned names, fit)."""
    tb, _, texts = task
    root.mkdir(parents=True)
    torch.manual_seed(0)
    backbone = load_backbone(tb.spec)
    base = {n: p.detach().clone() for n, p in backbone.model.named_parameters()}
    ctx = FitContext(
        backbone=backbone, train=train, classnames=list(train.classnames), texts=texts, label_texts=texts,
        rt=Runtime(device="cpu", batch_size=64, progress=False, cache_dir=None, seed=0),
        out_dir=root / "run", monitor=monitor,
    )
    method = _method(name, root, tb, train)
    fit = method.fit(ctx)
    weights = {f"backbone.{k}": v for k, v in fit.tuned.items()}
    weights |= {f"classifier.{k}": v for k, v in fit.classifier.tensors().items()}
    for r, p1 in enumerate(getattr(method, "phase1_models", [])):
        weights |= {f"phase1.round{r}.{k}": v.detach().clone() for k, v in p1.named_trainable()}
    return weights, {f"backbone.{k}": base[k] for k in fit.tuned}, fit


@pytest.mark.parametrize("name", ["fair", "latteclip", "flyp-pl", "coft", "coft+"])
def test_training_labels_never_reach_the_weights(name, task, tmp_path):
    labelled = task[1]
    unlabelled = labelled.subset(range(len(labelled)))
    unlabelled.records = [(p, -1) for p, _ in labelled.records]
    assert labelled.has_labels and not bool((unlabelled.labels >= 0).any())

    w_a, base, fit_a = _fit(name, task, labelled, labelled, tmp_path / "labelled")
    w_b, _, fit_b = _fit(name, task, unlabelled, None, tmp_path / "unlabelled")

    assert w_a.keys() == w_b.keys()
    differ = [k for k in w_a if not torch.equal(w_a[k], w_b[k])]
    assert not differ, f"{name}: the labels changed {len(differ)} of {len(w_a)} tensors, e.g. {differ[:3]}"

    # the test could fail: the labels reached run A, disagree with its pseudo-labels, and it trained
    seen = _label_accuracies(name, fit_a)
    assert seen and min(seen) < 100.0, seen
    assert _label_accuracies(name, fit_b) == []
    assert base and any(not torch.equal(w_a[k], base[k]) for k in base), "training changed no backbone weight"
