"""CoFT and CoFT+ (Wang et al., arXiv 2602.04337): collaborative label-free fine-tuning of CLIP.

No code and only the abstract of the paper are available, so this is a RECONSTRUCTION from the
abstract and its verified ancestor DeFT (``HotanLee/DeFT@dafcc14``); ``docs/methods/coft.md``
lists every choice with its source. In short:

Paper's words (abstract, VERIFIED):
  * "dual-prompt learning strategy with positive and negative textual prompts to explicitly
    model pseudo-label cleanliness in a sample-dependent manner, removing the need for
    hand-crafted thresholds";
  * "the negative prompt also regularizes lightweight visual adaptation modules";
  * "two-phase training scheme, transitioning from parameter-efficient fine-tuning on
    high-confidence samples to full fine-tuning guided by collaboratively filtered pseudo-labels";
  * "dual-model, cross-modal collaboration mechanism";
  * CoFT+: "iterative fine-tuning, momentum contrastive learning, and LLM-generated prompts".

DeFT (VERIFIED code): CoOp contexts (16 tokens, N(0, 0.02)), per-class cleanliness softmax,
``L_cls + L_neg``, 1 warm-up epoch, VPT-deep with 20 tokens, phase 1 SGD lr 0.03 / 10 epochs /
batch 64 / wd 5e-4; phase 2 full fine-tuning of the visual encoder + a randomly initialised linear
head on the ``ln_post`` [CLS], SGD lr 5e-4 / 10 epochs / batch 64, on the clean subset.

OURS (inferred; every one is a config field): zero-shot pseudo-labels as CoFT's starting labels;
"high-confidence" = the K most confident samples of each zero-shot pseudo-class (UPL's top-K, class-
balanced); the negative branch sees
the image feature without detaching it (so L_neg reaches the VPT tokens); the vision-side model
is a linear head on the VPT-adapted [CLS], trained during phase 1 on the samples the text side's
gate marks clean; the collaboration rule of :func:`labelless.scoring.coft.collaborate`; CoFT+
rounds re-estimating pseudo-labels from the two models, a MoCo term in phase 2 and the
description texts for the zero-shot pseudo-labels.

Modules: :mod:`~labelless.methods.coft.config` (the configs), :mod:`~labelless.methods.coft.phase1`,
:mod:`~labelless.methods.coft.phase2`, :mod:`~labelless.methods.coft.classifier` (the artifact),
:mod:`~labelless.methods.coft.method` (``fit``: zero-shot start, rounds, phase 2).
"""

from labelless.methods.coft.classifier import CoFTClassifier
from labelless.methods.coft.common import make_head
from labelless.methods.coft.config import CoFTConfig, CoFTPlusConfig, Phase1Optim, Phase2Optim
from labelless.methods.coft.method import CoFT, CoFTBase, CoFTPlus
from labelless.methods.coft.phase1 import Phase1
from labelless.methods.coft.phase2 import Phase2

__all__ = [
    "CoFT", "CoFTBase", "CoFTClassifier", "CoFTConfig", "CoFTPlus", "CoFTPlusConfig", "Phase1", "Phase1Optim",
    "Phase2", "Phase2Optim", "make_head",
]
