"""Faults: a SIGKILLed run resumes to the uninterrupted result; unsafe checkpoints are refused;
bad input through the CLI gives the documented error, with nothing partial left behind."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, make_colour_folder
from PIL import Image
from safetensors.torch import load_file

from labelless.cli import main
from labelless.engine import load_checkpoint
from labelless.errors import LabellessError

ADAPT = [
    "adapt", "--method", "flyp-pl", "--model", TINY, "--no-progress", "--no-cache",
    "--set", "optim.epochs=4", "--set", "optim.batch_size=4", "--set", "optim.lr=1e-3",
    "--set", "optim.checkpoint_every=1", "--set", "trainable=visual_ln",
]


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "labelless.cli", *args]


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    data = make_colour_folder(tmp_path / "data", per_class=6)
    spec = ["--data", f"imagefolder:root={data}"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_cli(ADAPT + spec + ["--out", str(straight)]), check=True, timeout=600)

    proc = subprocess.Popen(_cli(ADAPT + spec + ["--out", str(killed)]))
    ckpt = killed / "checkpoint.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "results.json").exists(), "the run finished before it could be killed"
    load_checkpoint(ckpt)  # the checkpoint on disk is whole (atomic write)

    # without --resume the run refuses to overwrite the checkpoint
    assert main(ADAPT + spec + ["--out", str(killed)]) == 2
    assert main(ADAPT + spec + ["--out", str(killed), "--resume"]) == 0
    for name in ("tensors.safetensors", "backbone.safetensors"):
        a = load_file(str(straight / "classifier" / name))
        b = load_file(str(killed / "classifier" / name))
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > " + str(Path(os.environ["EXPLOIT_MARK"])),))


def test_checkpoint_loading_never_unpickles_code(tmp_path, monkeypatch):
    mark = tmp_path / "pwned"
    monkeypatch.setenv("EXPLOIT_MARK", str(mark))
    bad = tmp_path / "checkpoint.pt"
    with open(bad, "wb") as f:
        pickle.dump({"params": _Exploit()}, f)
    with pytest.raises(LabellessError, match="cannot be read safely"):
        load_checkpoint(bad)
    assert not mark.exists()


def _write_odd_images(root: Path) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8), "L").save(root / "gray.png")
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).convert("CMYK").save(root / "cmyk.jpg")
    Image.fromarray((rng.integers(0, 65535, (40, 40))).astype(np.uint16)).save(root / "deep.png")
    Image.fromarray(rng.integers(0, 255, (3, 3, 3), dtype=np.uint8)).save(root / "tiny.png")
    (root / "garbage.jpg").write_bytes(os.urandom(500))
    good = root / "ok.jpg"
    Image.fromarray(rng.integers(0, 255, (60, 50, 3), dtype=np.uint8)).save(good)
    (root / "truncated.jpg").write_bytes(good.read_bytes()[:200])


def test_fuzz_odd_and_broken_images_through_predict(tmp_path):
    images = tmp_path / "imgs"
    _write_odd_images(images)
    out = tmp_path / "pred.csv"
    assert main(["predict", "--images", str(images), "--model", TINY, "--classes", "a,b,c",
                 "--out", str(out), "--no-progress", "--no-cache", "--scorer", "wca"]) == 0
    rows = out.read_text().splitlines()[1:]
    predicted = [r for r in rows if "skipped" not in r]
    skipped = [r for r in rows if "skipped" in r]
    assert len(predicted) == 5 and len(skipped) == 2
    assert {Path(r.split(",")[0]).name for r in skipped} == {"garbage.jpg", "truncated.jpg"}


@pytest.mark.parametrize(
    "case, content, message",
    [
        ("broken json", "{not json", "not valid JSON"),
        ("missing class", '{"red": ["a red thing"], "green": ["a green thing"]}', "blue"),
        ("empty list", '{"red": [], "green": ["g"], "blue": ["b"]}', "red"),
    ],
)
def test_fuzz_bad_description_files(tmp_path, capsys, case, content, message):
    data = make_colour_folder(tmp_path / "data", per_class=2)
    desc = tmp_path / "desc.json"
    desc.write_text(content)
    out = tmp_path / "run"
    code = main(["zeroshot", "--data", f"imagefolder:root={data}", "--model", TINY, "--no-progress",
                 "--no-cache", "--texts", f"descriptions:path={desc}", "--scorer", "cupl",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, case
    assert err.startswith("error:") and message in err and "Traceback" not in err
    assert not (out / "results.json").exists() and not (out / "classifier").exists()


def test_fuzz_split_file_with_missing_entries(tmp_path, capsys):
    root = tmp_path / "euro"
    (root / "2750" / "Forest").mkdir(parents=True)
    Image.new("RGB", (64, 64), (0, 120, 0)).save(root / "2750" / "Forest" / "Forest_1.jpg")
    split = root / "split_zhou_EuroSAT.json"
    split.write_text('{"train": [], "val": [], "test": [["Forest/Forest_1.jpg", 0, "Forest"], '
                     '["Forest/Forest_2.jpg", 0, "Forest"]]}')
    code = main(["zeroshot", "--data", f"eurosat:root={root},split=test", "--model", TINY,
                 "--no-progress", "--no-cache", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "Forest_2.jpg" in err and "missing" in err.lower()
    assert not (tmp_path / "run" / "results.json").exists()
