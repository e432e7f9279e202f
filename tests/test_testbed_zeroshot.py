"""The shipped testbed task is one the pre-trained tiny CLIP can read: zero-shot with the class
descriptions is far above chance. Every learning test measures a gain over this zero-shot; over a
model at chance level (a broken pre-training, a task too hard, descriptions that do not match the
images) pseudo-labels carry nothing and those gains would be noise.

Run the way a user runs it (``labelless zeroshot``'s library call), on the val split.
"""

from __future__ import annotations

from labelless.methods.base import Runtime
from labelless.runner import RunConfig, run
from labelless.testbed import ensure_testbed


def test_zero_shot_with_descriptions_is_far_above_chance(tmp_path):
    ensure_testbed(progress=False)
    res = run(RunConfig(
        method="zeroshot", model="testbed", data="testbed:split=val", texts="testbed:what=descriptions",
        params={"scorer": "cupl"}, out=str(tmp_path / "zs"),
        runtime=Runtime(device="cpu", batch_size=128, progress=False, cache_dir=None),
    ))
    m = res["metrics"]
    assert len(m.classnames) == 10 and m.n == 500  # chance: 10%
    # measured: 44.8% (val and test). 30% is 20 points above chance (the 500-image val split's
    # binomial sd is 1.3 points at 10%, 2.2 at 45%), 15 points under the measured value; the task
    # suite keeps tasks between 25% and 65%, so below 30% the shipped task has drifted out of the
    # range its recipes were chosen on.
    assert m.top1 >= 30.0, m.top1
