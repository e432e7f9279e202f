"""CoFT on the testbed: CoFT and CoFT+ beat zero-shot and the collaboration cleans labels.

The testbed's class names are opaque words, so the descriptions are the zero-shot texts
(``text_source=texts``) and fill the class slot of the learnable prompts
(``prompt_class_text=text``; with the opaque names the text side fell to 18.8% val top-1).
The recipes (``COFT_TESTBED``, ``COFT_PLUS_TESTBED``) were chosen on the dev suite's val splits
(``experiments/testbed/results/dev-selection.md``); the assertions are on the shipped task's
test split, with the phase-1 models measured on it through the run's monitoring set (logged,
never used to select anything).

What is asserted held on the held-out suite (seed 303, 6 tasks, ``heldout-303-suite.md``): CoFT
+5.0 +- 4.5 and CoFT+ +4.4 +- 4.5 over zero-shot with descriptions (5/6 tasks each), and the
collaboration's labels more precise than the raw pseudo-labels on 6/6 tasks. Here (shipped task,
test, seed 0): CoFT 53.6, CoFT+ 58.2, zero-shot 44.8; precision 0.618 vs 0.470.

NOT asserted: phase 2 beating phase 1 (with today's gentler phase 2 it is within noise here,
53.6 vs the phase-1 text side 53.2; it held with every seed at the earlier phase-2 lr 3e-3), and
CoFT+ beating CoFT (it does here, 58.2 vs 53.6, but on the held-out suite only on 4 of 6 tasks,
with a lower mean, 48.3 vs 49.0).

Earlier history of the recipe (val, 3-5 seeds): zero-shot over-predicts three classes (370, 332
and 314 of 1,500 train images against 150 each) and under-predicts four (32-40); phase 1 on the
per-class top FRACTION inherited that imbalance, UPL's class-balanced top-K
(``phase1_select=top_k``, K=32) made phase 1 learn with every seed, and the class-balanced
phase-2 CE (``phase2_balance=reweight``) helped.
"""

from __future__ import annotations

import json

import pytest
import torch

from labelless.backbones import load_backbone
from labelless.config import from_dict
from labelless.data import build_dataset
from labelless.demo import COFT_PLUS_TESTBED, COFT_TESTBED
from labelless.methods.base import FitContext, Runtime
from labelless.methods.coft import CoFT, CoFTConfig, CoFTPlus, CoFTPlusConfig
from labelless.methods.zeroshot import encode_texts

pytestmark = pytest.mark.slow


def _accuracy(logits, labels):
    return float((logits.argmax(1) == labels).float().mean())


def test_coft_and_coft_plus_beat_zeroshot_and_collaboration_cleans_labels(tmp_path):
    from labelless.data.features import extract_features
    from labelless.testbed import ensure_testbed
    from labelless.views import build_view

    tb = ensure_testbed(progress=False)
    train = build_dataset("testbed:split=train")
    test = build_dataset("testbed:split=test", classes=list(train.classnames))
    descriptions = json.loads(tb.task.descriptions_json.read_text())
    bb = load_backbone(tb.spec)
    rt = Runtime(device="cpu", batch_size=128, progress=False, cache_dir=None, seed=0)

    with torch.no_grad():
        text = torch.nn.functional.normalize(encode_texts(bb, descriptions).mean_embeddings().float(), dim=-1)
        feats = extract_features(bb, test, build_view("global", bb), progress=False)
        zs = _accuracy(feats.embeds[:, 0] @ text.T, test.labels)

    method = CoFT(from_dict(CoFTConfig, COFT_TESTBED))
    ctx = FitContext(backbone=bb, train=train, classnames=list(train.classnames), texts=descriptions,
                     label_texts=descriptions, rt=rt, out_dir=tmp_path / "coft", monitor=test)
    fit = method.fit(ctx)
    with torch.no_grad():
        phase2 = _accuracy(fit.classifier.predict(bb, test, rt), test.labels)
    rinfo = fit.info["coft"]["rounds"][0]
    # phase-1 sides on the test split (percent), measured before phase 2 touched the tower
    phase1 = {k: v / 100.0 for k, v in rinfo["monitor"].items()}
    print(f"\n[test] zero-shot {zs:.3f}  phase1 text {phase1['text_side_top1']:.3f}  "
          f"phase1 vision {phase1['vision_side_top1']:.3f}  phase2 {phase2:.3f}  | train: "
          f"pseudo {rinfo['pseudo']['label_acc']:.3f} collab frac {rinfo['collab']['frac']:.3f} "
          f"prec {rinfo['collab']['precision']:.3f}")
    # held-out suite: +5.0 +- 4.5 (5/6 tasks); here +8.8
    assert phase2 >= zs + 0.03
    # the cleanliness gate and the collaboration select labels more accurate than the raw
    # pseudo-labels (held-out: 6/6 tasks)
    assert rinfo["collab"]["precision"] > rinfo["pseudo"]["label_acc"]

    # CoFT+ = 2 rounds (the second on the first round's collaborative labels) + MoCo in phase 2
    bb_plus = load_backbone(tb.spec)
    plus = CoFTPlus(from_dict(CoFTPlusConfig, COFT_PLUS_TESTBED))
    ctx_plus = FitContext(backbone=bb_plus, train=train, classnames=list(train.classnames), texts=descriptions,
                          label_texts=descriptions, rt=rt, out_dir=tmp_path / "coft-plus")
    fit_plus = plus.fit(ctx_plus)
    with torch.no_grad():
        top1_plus = _accuracy(fit_plus.classifier.predict(bb_plus, test, rt), test.labels)
    print(f"[test] CoFT+ {top1_plus:.3f} vs CoFT {phase2:.3f}")
    # held-out suite: +4.4 +- 4.5 (5/6 tasks); here +13.4
    assert top1_plus >= zs + 0.03
