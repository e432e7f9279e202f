"""Learning test: on the in-project testbed FAIR must beat zero-shot with the descriptions.

The testbed (``labelless.testbed``) is a procedural fine-grained task with a tiny CLIP pre-trained
in-project; its class names are opaque words, so the descriptions carry the class information
and local crops see what the 64 px global view blurs. Settings below were tuned on the *val*
split only (``FAIR_TESTBED``); the test split is evaluated once, here, with a fixed margin.

Val sweep (zero-shot 44.8): the paper's strong view (RandAugment n=2, m=9) hurt (45.6 vs 48.8
without it on 600 images: colour operations erase a class attribute); 1500 images, 8 crops / top-4:
50.6; 16 crops / top-8: 53.6; 5 epochs instead of 3: 46.6. The paper's "w/o LAS" ablation
(fixed description embeddings as the pseudo-labeller) was as good as FAIR on the testbed (val
50.4 vs 50.6), so FAIR > FAIR w/o LAS is NOT asserted.
"""

from __future__ import annotations

import pytest
import torch

from labelless.backbones import load_backbone
from labelless.config import from_dict
from labelless.data import build_dataset
from labelless.demo import FAIR_TESTBED  # the testbed recipe, tuned on val
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
