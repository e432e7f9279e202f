"""Learning test: on the in-project testbed FAIR must beat zero-shot with the descriptions.

The testbed (``labelless.testbed``) is a procedural fine-grained task with a tiny CLIP pre-trained
in-project; its class names are opaque words, so the descriptions carry the class information
and local crops see what the 64 px global view blurs. The recipe (``FAIR_TESTBED``: no adaptive
pseudo-label weight, gradients through the top-k crops, lr 3e-4, 3 epochs, 16 crops / top-8, no
RandAugment) was chosen on the dev suite's val splits (``experiments/testbed/results/
dev-selection.md``: +2.6 +- 1.7 over zero-shot, 6/6 dev tasks; the earlier lr-1e-3 recipe with
the adaptive weight collapsed onto few classes on new tasks). On the held-out suite (seed 303)
it gains +4.1 +- 4.0 over 6 tasks; on this task's test split 51.9 vs 44.8 (seed 0). The test
split is evaluated once, here, with a fixed margin of +3.

FAIR > "FAIR w/o LAS" is NOT asserted: it was a wash on val with the earlier recipe (50.6 vs
50.4) and is not measured on the held-out suite.
"""

from __future__ import annotations

import pytest
import torch

from labelless.backbones import load_backbone
from labelless.config import from_dict
from labelless.data import build_dataset
from labelless.demo import FAIR_TESTBED  # the testbed recipe, chosen on the dev suite (val)
from labelless.methods.base import FitContext, Runtime
from labelless.methods.fair import Fair, FairConfig
from labelless.methods.prototype import PrototypeClassifier
from labelless.methods.zeroshot import encode_texts
from labelless.runner import evaluate
from labelless.text import build_texts

pytestmark = pytest.mark.slow



def _fit(tmp_path, train, texts, labels, params, tag):
    backbone = load_backbone("testbed")
    cfg = from_dict(FairConfig, params)
    ctx = FitContext(
        backbone=backbone, train=train, classnames=list(train.classnames), texts=texts,
        label_texts=labels, rt=Runtime(device="cpu", progress=False, seed=0, cache_dir=None),
        out_dir=tmp_path / tag,
    )
    fit = Fair(cfg).fit(ctx)
    return fit, backbone


def test_fair_beats_zeroshot_on_testbed(tmp_path):
    from labelless.testbed import ensure_testbed

    ensure_testbed()
    train = build_dataset("testbed:split=train")
    test = build_dataset("testbed:split=test", classes=list(train.classnames))
    texts = build_texts("testbed:what=descriptions", list(train.classnames))
    labels = texts  # the opaque class names carry nothing; descriptions are the label texts
    rt = Runtime(device="cpu", progress=False, seed=0, cache_dir=None)

    torch.manual_seed(0)
    fair, bb = _fit(tmp_path, train, texts, labels, FAIR_TESTBED, "fair")
    _, m_fair = evaluate(fair.classifier, bb, test, rt)
    # zero-shot = the initial anchors (mean description embedding) on the un-adapted model
    bb0 = load_backbone("testbed")
    zs = PrototypeClassifier(list(train.classnames), bb0.spec, {"logit_scale": 100.0},
                             encode_texts(bb0, texts).mean_embeddings())
    _, m_zs = evaluate(zs, bb0, test, rt)
    print(f"testbed test top-1: zero-shot {m_zs.top1:.1f}, FAIR {m_fair.top1:.1f}")
    assert m_fair.top1 >= m_zs.top1 + 3.0
