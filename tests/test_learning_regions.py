"""Learning test of the region probe on the in-project testbed (pre-trained tiny CLIP).

The probe's defaults are provisional (to be chosen on the testbed's val split, never test); the
assertions below are on the test split. Features are extracted once per module (train + test, global + 16 crops).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from labelless.methods.base import Runtime
from labelless.methods.region_probe import (
    RegionProbeConfig,
    accuracy,
    class_text_embeddings,
    extract_region_features,
    fit_probe,
    probe_logits,
)


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    from labelless.backbones import load_backbone
    from labelless.data import build_dataset
    from labelless.testbed import ensure_testbed
    from labelless.text import build_texts

    tb = ensure_testbed(progress=False)
    backbone = load_backbone(tb.spec)
    train = build_dataset("testbed:split=train")
    test = build_dataset("testbed:split=test")
    names = list(train.classnames)
    texts = class_text_embeddings(backbone, build_texts("testbed:what=descriptions", names), names)
    rt = Runtime(device="cpu", batch_size=128, progress=False, cache_dir=str(tmp_path_factory.mktemp("cache")))
    cfg = RegionProbeConfig()
    tr = extract_region_features(backbone, train, cfg, rt)
    te = extract_region_features(backbone, test, cfg, rt)
    return tr, te, texts


def _acc(testbed, **changes) -> float:
    tr, te, texts = testbed
    cfg = replace(RegionProbeConfig(), **changes)
    w, b, _, info = fit_probe(tr, texts, cfg, seed=0)
    assert info["protocol"].startswith("label-free") or cfg.labels == "true"
    return accuracy(probe_logits(te, texts, cfg, w, b), te.labels)


def test_label_free_probe_beats_zero_shot(testbed):
    tr, te, texts = testbed
    zero_shot = accuracy(te.global_embed @ texts.t(), te.labels)
    probe = _acc(testbed)  # defaults: crops, soft margin, global pseudo-label, k=5, labels=pseudo
    assert probe > zero_shot + 2.0, (probe, zero_shot)


def test_topk_crops_beat_all_region_average(testbed):
    topk = _acc(testbed)
    average = _acc(testbed, scoring="average")
    assert topk > average + 1.0, (topk, average)


def test_training_labels_never_leak_into_label_free_fit(testbed):
    tr, te, texts = testbed
    cfg = RegionProbeConfig()
    scrambled = replace(tr, labels=torch.full_like(tr.labels, -1))
    w1, b1, _, _ = fit_probe(tr, texts, cfg, seed=0)
    w2, b2, _, _ = fit_probe(scrambled, texts, cfg, seed=0)
    assert torch.equal(w1, w2) and torch.equal(b1, b2)
