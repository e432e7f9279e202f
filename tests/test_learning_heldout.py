"""Learning tests on a HELD-OUT testbed task: the shipped recipes must keep their gain on a task
nobody tuned on.

The task is ``experiments/testbed/heldout/heldout-4-mixed.yaml`` (the held-out suite's
mixed-attribute task, picked before any held-out number was seen: every pair of classes differs
in its own attribute). Each run is exactly the held-out suite's run of that method (same recipe
from :mod:`labelless.demo`, seed 0, adapt on train, top-1 on test), and each margin is set below
the gain the suite measured, by more than the seed spread seen on the dev tasks
(``experiments/testbed/results/``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from labelless.demo import COFT_TESTBED, FAIR_TESTBED, LATTE_TESTBED_OPTIM
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


# (method, recipe, asserted gain over zero-shot with descriptions in top-1 points)
CASES = {
    "fair": ("fair", FAIR_TESTBED, 3.0),
    "latteclip": ("latteclip", {"captions": "testbed", "groups": "testbed", "optim": LATTE_TESTBED_OPTIM}, 3.0),
    "coft": ("coft", COFT_TESTBED, 3.0),
}


@pytest.mark.parametrize("name", list(CASES))
def test_recipe_keeps_its_gain_on_a_heldout_task(tmp_path, zero_shot, name):
    method, params, margin = CASES[name]
    top1 = _top1(tmp_path, method, params, name)
    print(f"\n[held-out {TASK.stem}] {name} {top1:.1f} vs zero-shot {zero_shot:.1f}")
    assert top1 >= zero_shot + margin
