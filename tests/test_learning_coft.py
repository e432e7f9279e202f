"""CoFT on the testbed: its collaboration selects cleaner labels; its gain over zero-shot is seed-fragile.

The testbed's class names are opaque words, so the descriptions are the zero-shot texts
(``text_source=texts``) and fill the class slot of the learnable prompts
(``prompt_class_text=text``; with the opaque names the text side fell to 18.8% val top-1).
Hyper-parameters were chosen on the val split only; the assertions are on the test split.
Val sweep (phase-1 top fraction 0.1 / 0.15 / 0.2 / 0.3 -> phase 2 top-1 42.0 / 46.2 / 49.4 / 45.0,
zero-shot 44.8) shows the gain is sensitive to that fraction. The paper's claim that phase 2 beats
phase 1 did NOT hold on the testbed (val: phase-1 text side 52.2, phase 2 49.4), so it is not
asserted; the collaboration's label precision beat the raw pseudo-labels in every val run.
The gain over zero-shot is seed-fragile: the bench's 3 seeds (experiments/testbed/adaptation.yaml)
give 51.8 / 44.2 / 45.8 test top-1 against 44.8, so "CoFT beats zero-shot" is NOT asserted (it
would pass only by the choice of seed); what held in every val run and with all 3 seeds, the
collaboration's cleaner labels (precision 0.59 / 0.50 / 0.54 vs 0.47 raw), is.
"""

from __future__ import annotations

import json

import pytest
import torch

from labelless.backbones import load_backbone
from labelless.config import from_dict
from labelless.demo import COFT_TESTBED
from labelless.methods.base import FitContext, Runtime
from labelless.methods.coft import CoFT, CoFTConfig
from labelless.methods.zeroshot import encode_texts

PARAMS = COFT_TESTBED  # the testbed recipe, chosen on val (see the module docstring)


def _testbed_data():
    try:
        from labelless.testbed import ensure_testbed
    except ImportError:  # pragma: no cover - the testbed module is part of the package
        pytest.skip("labelless.testbed is not available")
    tb = ensure_testbed(progress=False)
    try:
        from labelless.data import build_dataset

        split = {s: build_dataset(f"testbed:split={s}") for s in ("train", "val", "test")}
    except Exception:
        from labelless.data.benchmarks import read_zhou_split

        split = {s: read_zhou_split(tb.task.split_json, tb.task.images_dir, s, name="testbed")
                 for s in ("train", "val", "test")}
    return tb, split


def _accuracy(logits, labels):
    return float((logits.argmax(1) == labels).float().mean())


@pytest.mark.slow
def test_coft_learns_and_collaboration_cleans_labels(tmp_path):
    tb, split = _testbed_data()
    bb = load_backbone(tb.spec)
    classes = split["train"].classnames
    descriptions = json.loads(tb.task.descriptions_json.read_text())
    rt = Runtime(device="cpu", batch_size=128, progress=False, cache_dir=None, seed=0)

    from labelless.data.features import extract_features
    from labelless.views import build_view

    test = split["test"]
    with torch.no_grad():
        text = encode_texts(bb, descriptions).mean_embeddings().float()
        text = torch.nn.functional.normalize(text, dim=-1)
        feats = extract_features(bb, test, build_view("global", bb), progress=False)
        zs = _accuracy(feats.embeds[:, 0] @ text.T, test.labels)

    method = CoFT(from_dict(CoFTConfig, PARAMS))
    ctx = FitContext(backbone=bb, train=split["train"], classnames=classes, texts=descriptions,
                     label_texts=descriptions, rt=rt, out_dir=tmp_path / "coft")
    fit = method.fit(ctx)
    inf = method.phase1_models[-1].infer(test, rt)
    with torch.no_grad():
        phase2 = _accuracy(fit.classifier.predict(bb, test, rt), test.labels)
    info = fit.info["coft"]["rounds"][0]
    print(f"\n[test] zero-shot {zs:.3f}  phase1 text {_accuracy(inf['text'], test.labels):.3f}  "
          f"phase1 vision {_accuracy(inf['vision'], test.labels):.3f}  phase2 {phase2:.3f}  | train: "
          f"pseudo {info['pseudo']['label_acc']:.3f} collab frac {info['collab']['frac']:.3f} "
          f"prec {info['collab'].get('precision', float('nan')):.3f}")
    # NOT asserted: phase2 > zero-shot. It holds with this seed (test 0.518 vs 0.448) but not with
    # seeds 1 and 2 (0.442, 0.458), so asserting it would pass by the choice of seed (issue 7).
    assert phase2 > 0.2  # far above chance (0.1): the fine-tuned model did not collapse
    # the cleanliness gate and the collaboration select labels more accurate than the raw pseudo-labels
    # (train-split precision 0.594 / 0.498 / 0.544 with seeds 0 / 1 / 2, raw 0.470)
    assert info["collab"]["precision"] > info["pseudo"]["label_acc"]
