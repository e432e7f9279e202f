"""Two gloo processes launched by torchrun train exactly like one process with the doubled batch."""

from __future__ import annotations

import json
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


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
@pytest.mark.parametrize("method", ["fair", "flyp-pl", "latteclip", "coft+"])
def test_method_two_processes_equal_one_process_with_double_batch(tmp_path, method):
    from conftest import make_colour_folder

    data = make_colour_folder(tmp_path / "data", per_class=4)  # 12 images: 3 global batches of 4
    single, multi = tmp_path / "single", tmp_path / "multi"
    subprocess.run([sys.executable, str(WORKER), method, str(single), "4", "1", str(data)], check=True,
                   env=_env(), timeout=300)
    subprocess.run(
        _torchrun() + ["--standalone", "--nproc_per_node", "2", str(WORKER), method, str(multi), "2", "1", str(data)],
        check=True, env=_env(), timeout=300,
    )
    a = torch.load(single / "params.pt")
    b = torch.load(multi / "params.pt")
    assert a.keys() == b.keys() and any(k.startswith("visual.") for k in a)
    from labelless.registry import METHODS

    assert METHODS.get(method).ddp_exact
    from labelless.backbones import load_backbone

    start = dict(load_backbone("openclip:labelless-tiny:random").model.named_parameters())
    assert any(not torch.allclose(a[k], start[k]) for k in a if k in start), f"{method} did not train"
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_cli_adapt_under_torchrun_writes_one_run(tmp_path):
    from conftest import TINY, make_colour_folder

    data = make_colour_folder(tmp_path / "data", per_class=4)
    out = tmp_path / "run"
    args = ["adapt", "--method", "fair", "--model", TINY, "--data", f"imagefolder:root={data}",
            "--out", str(out), "--no-progress", "--no-cache", "--device", "cpu",
            "--set", "n_crops=2", "--set", "k=1", "--set", "randaug_n=0",
            "--set", "optim.epochs=1", "--set", "optim.batch_size=2"]
    proc = subprocess.run(_torchrun() + ["--standalone", "--nproc_per_node", "2", "-m", "labelless.cli", *args],
                          env=_env(), timeout=300, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("results: ") == 1  # rank 0 alone writes the results
    rec = json.loads((out / "results.json").read_text())
    assert rec["method"] == "fair" and rec["data"]["n"] == 12
    assert (out / "classifier").is_dir() and (out / "checkpoint.pt").exists()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_feature_extraction_shards_over_ranks_and_merges_in_order(tmp_path):
    from conftest import make_colour_folder

    data = make_colour_folder(tmp_path / "data", per_class=4)  # 12 images: shards of 4 -> 3 shards
    single, multi = tmp_path / "single", tmp_path / "multi"
    subprocess.run([sys.executable, str(WORKER), "features", str(single), str(data)], check=True,
                   env=_env(), timeout=300)
    subprocess.run(_torchrun() + ["--standalone", "--nproc_per_node", "2", str(WORKER), "features", str(multi),
                                  str(data)], check=True, env=_env(), timeout=300)
    a, b = torch.load(single / "features.pt"), torch.load(multi / "features.pt")
    assert a["counts"] == [12]
    assert b["counts"] == [8, 4]  # rank 0 encoded shards 0 and 2, rank 1 shard 1
    torch.testing.assert_close(a["embeds"], b["embeds"])  # same crops, same order
    assert len(list((multi / "cache").rglob("shard_*.npz"))) == 3
