"""CoFT on the testbed: it beats zero-shot, phase 2 beats phase 1, the collaboration cleans labels,
and CoFT+ beats CoFT.

The testbed's class names are opaque words, so the descriptions are the zero-shot texts
(``text_source=texts``) and fill the class slot of the learnable prompts
(``prompt_class_text=text``; with the opaque names the text side fell to 18.8% val top-1).
Hyper-parameters were chosen on the val split only (zero-shot 44.8); the assertions are on the
test split, with the phase-1 models measured on it through the run's monitoring set (logged,
never used to select anything).

What decided the recipe (val, 3-5 seeds): zero-shot over-predicts three classes (370, 332 and
314 of 1,500 train images against 150 each) and under-predicts four (32-40). Phase 1 on the
per-class top FRACTION (the earlier recipe, top 20%) inherits that imbalance; its text side
stayed at zero-shot level and varied with the seed (val 43.2-51.8 over 3 seeds; phase 2 42.0-49.4 over 5).
UPL's class-balanced top-K (``phase1_select=top_k``, K=32) made phase 1 learn with every seed
(val text side 48.6-51.4), the collaborative labels cleaner (precision 0.615-0.638 vs 0.470 raw)
and phase 2 better than phase 1 with each of 5 seeds (val 50.2-54.6, +0.8 to +3.2 over phase 1),
with the phase-2 CE class-balanced (``phase2_balance=reweight``; without it +0.8 to +1.8 on 3
seeds). Other values tried on val (5 seeds): K=48 (phase 2 52.6 mean, but it only tied phase 1 on
one seed), 10 phase-2 epochs (51.2), phase-2 lr 0.01 (50.4), 10 phase-1 epochs (52.2, one seed with
phase 2 < phase 1). CoFT+ (2 rounds, MoCo) with the same settings beat CoFT with each of 3 val
seeds (57.8 / 52.6 / 52.6 vs 54.6 / 51.6 / 51.6); bench, test split: 58.4 +- 1.5 vs 55.7 +- 0.5.
"""

from __future__ import annotations

import json

import pytest
import torch

from labelless.backbones import load_backbone
from labelless.config import from_dict
from labelless.data import build_dataset
from labelless.demo import COFT_TESTBED
from labelless.methods.base import FitContext, Runtime
from labelless.methods.coft import CoFT, CoFTConfig, CoFTPlus, CoFTPlusConfig
from labelless.methods.zeroshot import encode_texts

pytestmark = pytest.mark.slow


def _accuracy(logits, labels):
    return float((logits.argmax(1) == labels).float().mean())


def test_coft_beats_zeroshot_phase2_beats_phase1_and_coft_plus_beats_coft(tmp_path):
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
    # val: phase 2 beat zero-shot by 5.4-9.8 points with each of 5 seeds
    assert phase2 >= zs + 0.03
    # val: phase 2 beat phase 1's better side with each of 5 seeds (+0.8 to +3.2)
    assert phase2 > max(phase1["text_side_top1"], phase1["vision_side_top1"])
    # the cleanliness gate and the collaboration select labels more accurate than the raw pseudo-labels
    assert rinfo["collab"]["precision"] > rinfo["pseudo"]["label_acc"]

    # CoFT+ = 2 rounds (the second on the first round's collaborative labels) + MoCo in phase 2
    bb_plus = load_backbone(tb.spec)
    plus = CoFTPlus(from_dict(CoFTPlusConfig, COFT_TESTBED))
    ctx_plus = FitContext(backbone=bb_plus, train=train, classnames=list(train.classnames), texts=descriptions,
                          label_texts=descriptions, rt=rt, out_dir=tmp_path / "coft-plus")
    fit_plus = plus.fit(ctx_plus)
    with torch.no_grad():
        top1_plus = _accuracy(fit_plus.classifier.predict(bb_plus, test, rt), test.labels)
    print(f"[test] CoFT+ {top1_plus:.3f} vs CoFT {phase2:.3f}")
    assert top1_plus > phase2
