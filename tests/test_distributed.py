"""Two gloo processes launched by torchrun train exactly like one process with the doubled batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_worker.py")


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(WORKER.parent), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_two_processes_equal_one_process_with_double_batch(tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    subprocess.run([sys.executable, str(WORKER), str(single), "8", "2"], check=True, env=_env(),
                   timeout=300)
    subprocess.run(
        _torchrun() + ["--standalone", "--nproc_per_node", "2", str(WORKER), str(multi), "4", "2"],
        check=True, env=_env(), timeout=300,
    )
    a = torch.load(single / "params.pt")
    b = torch.load(multi / "params.pt")
    torch.manual_seed(1)
    start = torch.nn.Linear(6, 3)  # the toy method's initialisation
    assert not torch.allclose(a["weight"], start.weight), "the toy run did not train"
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    # one checkpoint and one log, written by rank 0 only
    assert (multi / "run" / "checkpoint.pt").exists() and (multi / "run" / "train_log.csv").exists()
