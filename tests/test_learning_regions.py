"""Learning test of the region probe on the in-project testbed (pre-trained tiny CLIP).

The probe's own defaults (pseudo_source, head_init) were chosen on the testbed's val split, never
test; the assertions below are on the test split. Features are extracted once per module (train +
test, global + 16 crops). On this testbed the all-region average beats top-k selection (see the
module docstring of ``labelless.methods.region_probe``), so no test claims the opposite.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from labelless.bench.region_sweep import accuracy
from labelless.methods.base import Runtime
from labelless.methods.region_probe import (
    RegionProbeConfig,
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
    assert probe > zero_shot + 1.0, (probe, zero_shot)  # test: 47.8 vs 44.8 when tuned


def test_testbed_recipe_beats_zero_shot(testbed):
    # the testbed recipe (labelless.demo.REGION_TESTBED: the all-region average), chosen on the dev
    # suite's val splits; `experiments/region/testbed.yaml` measured it at 55.4 +- 0.5 over 3
    # seeds on this test split (zero-shot 44.8), and it held on the held-out suite (+5.2 +- 4.2)
    from labelless.demo import REGION_TESTBED

    tr, te, texts = testbed
    zero_shot = accuracy(te.global_embed @ texts.t(), te.labels)
    recipe = _acc(testbed, **REGION_TESTBED)
    assert recipe > zero_shot + 5.0, (recipe, zero_shot)


def test_region_features_beat_the_global_view_alone(testbed):
    regions = _acc(testbed)
    global_only = _acc(testbed, scoring="global_linear")
    assert regions > global_only + 1.0, (regions, global_only)  # test: 47.8 vs 44.4 when tuned


def test_oracle_region_target_beats_pseudo_label_target(testbed):
    # the paper's Table 2 protocol (true labels train the head, NOT label-free): scoring the
    # regions against the true class finds the discriminative ones far better than against the
    # global pseudo-label
    pseudo_target = _acc(testbed, labels="true", head_init="random")
    oracle = _acc(testbed, labels="true", head_init="random", target="true")
    assert oracle > pseudo_target + 5.0, (oracle, pseudo_target)


def test_training_labels_never_leak_into_label_free_fit(testbed):
    tr, te, texts = testbed
    cfg = RegionProbeConfig()
    scrambled = replace(tr, labels=torch.full_like(tr.labels, -1))
    w1, b1, _, _ = fit_probe(tr, texts, cfg, seed=0)
    w2, b2, _, _ = fit_probe(scrambled, texts, cfg, seed=0)
    assert torch.equal(w1, w2) and torch.equal(b1, b2)
