"""Learning test on a HELD-OUT testbed task: a shipped recipe must keep its gain on a task
nobody tuned on.

The task is ``experiments/testbed/heldout/heldout-4-mixed.yaml`` (the held-out suite's
mixed-attribute task, picked before any held-out number was seen). The run is exactly the
held-out suite's run (the recipe from :mod:`labelless.demo`, seed 0, adapt on train, top-1 on
test; ``labelless bench experiments/testbed/heldout-suite.yaml``).

What is asserted is what held on the whole held-out suite (``experiments/testbed/results/
heldout-suite.md``, 6 tasks, seed 0): LaTTe-CLIP +4.1 ± 2.5 over zero-shot with descriptions,
>= +3 on 5 of 6 tasks, +7.3 on this task; the margin (+3) sits 4 points below that, more than
its seed spread on the shipped task (± 0.8 over 3 seeds). FAIR (-0.6 ± 4.8), the region probe
(+0.7 ± 1.0), CoFT (-2.2 ± 7.8), CoFT+ (+2.2 ± 3.4) and FLYP + pseudo-labels did NOT hold on the
suite, so nothing is asserted for them here, even where this one task shows a gain (the
README's testbed section and docs/methods/ say why).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from labelless.demo import LATTE_TESTBED_OPTIM
from labelless.methods.base import Runtime
from labelless.runner import RunConfig, run

pytestmark = pytest.mark.slow

TASK = Path(__file__).resolve().parents[1] / "experiments" / "testbed" / "heldout" / "heldout-4-mixed.yaml"


def _top1(tmp_path, method: str, params: dict, tag: str) -> float:
    texts = f"testbed:task={TASK},what=descriptions"
    cfg = RunConfig(method=method, model="testbed", data=f"testbed:task={TASK},split=train",
                    eval_data=f"testbed:task={TASK},split=test", texts=texts, label_texts=texts,
                    out=str(tmp_path / tag), seed=0, params=params,
                    runtime=Runtime(device="cpu", progress=False, seed=0))
    return run(cfg)["metrics"].top1


@pytest.fixture(scope="module")
def zero_shot(tmp_path_factory) -> float:
    return _top1(tmp_path_factory.mktemp("zs"), "zeroshot", {"scorer": "cupl"}, "zs")


def test_latteclip_keeps_its_gain_on_a_heldout_task(tmp_path, zero_shot):
    params = {"captions": "testbed", "groups": "testbed", "optim": LATTE_TESTBED_OPTIM}
    top1 = _top1(tmp_path, "latteclip", params, "latteclip")
    print(f"\n[held-out {TASK.stem}] LaTTe-CLIP {top1:.1f} vs zero-shot {zero_shot:.1f}")
    assert top1 >= zero_shot + 3.0
