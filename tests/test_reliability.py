"""Wrong results, wrong records, lost time and raw tracebacks found by probing the CLI (one test
or more per finding): non-finite settings and weights, resumes with changed settings, seed
statistics in `aggregate`, output folders that hold another run, unwritable or odd `--out`
paths, damaged classifiers, single-class tasks, unmatched description keys, plain warnings.

The LLM-server findings (leaked API key, partial outputs, retries) are in
test_reliability_textgen.py, the model-hub ones (no network) in test_reliability_hub.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, make_colour_folder
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import Dataset

from labelless.cli import main
from labelless.engine import NonFiniteWeightsError, OptimConfig, TrainLoop
from labelless.errors import ConfigError, LabellessError
from labelless.eval import aggregate, write_results, write_tables


def cli(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def zeroshot(capsys, data, out, *extra):
    return cli(capsys, "zeroshot", "--model", TINY, "--data", data, "--out", out, "--no-progress",
               "--no-cache", *extra)


def _results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


@pytest.fixture
def colours(tmp_path) -> Path:
    return make_colour_folder(tmp_path / "colours", per_class=2)


# ---- 1. non-finite settings and weights ---------------------------------------------------


@pytest.mark.parametrize("lr", ["inf", "nan"])
def test_non_finite_learning_rate_is_refused_before_any_work(capsys, tmp_path, colours, lr):
    """lr=inf trained a classifier of NaNs and exited 0; lr=nan raised a traceback after
    creating the run folder."""
    out = tmp_path / "run"
    rc, _, err = cli(capsys, "adapt", "--method", "fair", "--model", TINY, "--data",
                     f"imagefolder:root={colours}", "--out", out, "--no-progress", "--no-cache",
                     "--set", f"optim.lr={lr}", "--set", "optim.epochs=1")
    assert rc == 2 and err.startswith("error:") and "Traceback" not in err
    assert "optim.lr" in err and "finite" in err
    assert not out.exists()  # checked before the run folder is made
    with pytest.raises(ConfigError, match="optim.lr"):  # the library path too
        OptimConfig(lr=float(lr))


class _FourSamples(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.tensor(float(i))


class _Diverging:
    """sqrt(p) at p = 0: the loss is finite (0) but its gradient is infinite, so one AdamW step
    turns the weights into NaN while every loss the loop sees stays finite."""

    def __init__(self):
        self.p = nn.Parameter(torch.zeros(3))

    def named_trainable(self):
        return [("p", self.p)]

    def training_step(self, batch, step):
        return {"loss": torch.sqrt(self.p).sum() + 0.0 * batch.sum()}


def test_diverged_weights_stop_training_before_they_are_saved(tmp_path):
    loop = TrainLoop(_Diverging(), lambda epoch: _FourSamples(), OptimConfig(lr=1e-3, epochs=1, batch_size=4),
                     tmp_path, progress=False)
    with pytest.raises(NonFiniteWeightsError, match=r"(?s)NaN or infinite.*optim.lr"):
        loop.run()
    assert not (tmp_path / "checkpoint.pt").exists()


def test_classifier_with_non_finite_values_is_neither_saved_nor_loaded(capsys, tmp_path, colours):
    run = tmp_path / "run"
    assert zeroshot(capsys, f"imagefolder:root={colours}", run)[0] == 0
    from labelless.methods.base import load_classifier

    clf, backbone = load_classifier(run / "classifier")
    for t in clf.tensors().values():
        if t.is_floating_point():
            t.fill_(float("nan"))
    with pytest.raises(LabellessError, match="NaN or infinite"):
        clf.save(tmp_path / "saved", backbone)
    assert not (tmp_path / "saved").exists()

    path = run / "classifier" / "tensors.safetensors"
    tensors = load_file(str(path))
    tensors["text_embeds"][0, 0, 0] = float("inf")
    save_file(tensors, str(path))
    rc, _, err = cli(capsys, "predict", "--classifier", run / "classifier", "--images", colours,
                     "--out", tmp_path / "pred.csv", "--no-progress", "--no-cache")
    assert rc == 2 and "tensors.safetensors" in err and "NaN or infinite" in err
    assert not (tmp_path / "pred.csv").exists()  # before: exit 0, confidence=nan for every image


# ---- 2 + 10a/b. resume: same settings only; wall time of every stretch; partial files -------

ADAPT = ["adapt", "--method", "flyp-pl", "--model", TINY, "--no-progress", "--no-cache",
         "--set", "optim.epochs=3", "--set", "optim.batch_size=4", "--set", "optim.lr=1e-3",
         "--set", "optim.checkpoint_every=1", "--set", "trainable=visual_ln"]


def test_resume_refuses_changed_settings_and_records_runtime_changes(capsys, tmp_path, colours, monkeypatch):
    desc = tmp_path / "desc.json"
    desc.write_text(json.dumps({"red": ["a red blob."], "green": ["a green blob."], "blue": ["a blue blob."]}))
    out = tmp_path / "run"
    args = [*ADAPT, "--data", f"imagefolder:root={colours}", "--texts", f"descriptions:path={desc}",
            "--out", str(out)]

    saves = []
    real_save = TrainLoop.save

    def interrupted_save(self):  # Ctrl-C right after the third checkpoint
        path = real_save(self)
        saves.append(self.global_step)
        if len(saves) == 3:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(TrainLoop, "save", interrupted_save)
    assert cli(capsys, *args)[0] == 130
    monkeypatch.setattr(TrainLoop, "save", real_save)
    ckpt = out / "checkpoint.pt"
    assert ckpt.is_file() and not (out / "results.json").exists()

    def state():
        return sorted((p.relative_to(out).as_posix(), p.stat().st_mtime_ns, p.read_bytes())
                      for p in out.rglob("*") if p.is_file())

    before = state()

    # a changed method setting: refused, naming the key and how to start a new run
    rc, _, err = cli(capsys, *args, "--set", "optim.lr=1e-2", "--set", "max_logit_scale=50", "--resume")
    assert rc == 2 and "params.optim.lr" in err and "params.max_logit_scale" in err
    assert "--overwrite" in err and "another --out" in err
    # changed texts (same spec, the file was edited): refused, naming them
    desc.write_text(json.dumps({"red": ["crimson."], "green": ["a green blob."], "blue": ["a blue blob."]}))
    rc, _, err = cli(capsys, *args, "--resume")
    assert rc == 2 and "texts" in err
    desc.write_text(json.dumps({"red": ["a red blob."], "green": ["a green blob."], "blue": ["a blue blob."]}))
    assert state() == before  # the refused resumes changed nothing in the run folder

    partial = out / ".checkpoint.pt.k2j4h5l6.tmp.pt"  # what a kill mid-write leaves
    partial.write_bytes(b"")
    # a runtime setting may change: allowed, and recorded with the step it applies from
    rc, _, err = cli(capsys, *args, "--batch-size", "16", "--resume")
    assert rc == 0, err
    res = _results(out)
    assert res["config"]["method"]["optim"]["lr"] == 1e-3 and res["config"]["method"]["max_logit_scale"] != 50
    (event,) = res["extra"]["resumes"]
    assert event["runtime_changed"] == {"batch_size": {"was": 64, "now": 16}}
    assert event["checkpoints"]["checkpoint.pt"]["global_step"] == saves[-1]
    assert not partial.exists()
    # the wall time is the sum of both stretches, not the last one alone
    res_time = res["resources"]
    first, last = res_time["wall_s_stretches"]
    assert first > 0 and last > 0 and res_time["wall_s"] == pytest.approx(first + last, abs=2e-3)


# ---- 3. aggregate: one group per config and data set, distinct seeds ----------------------


def _fake(root: Path, name: str, seed: int, top1, lr=1e-3, data="imagefolder:root=/a", fp="a" * 16):
    run = {"method": "fair", "model": TINY, "data": data, "eval_data": None, "seed": seed,
           "out": str(root / name), "runtime": {"device": "cpu", "num_workers": seed}, "params": {}}
    write_results(
        root / name, method="fair", backbone={"spec": TINY, "name": "openclip:labelless-tiny"},
        data={"spec": data, "name": "imagefolder", "split": None, "fingerprint": fp}, seed=seed,
        metrics={"top1": top1, "top5": None if top1 is None else top1 + 10, "mean_per_class": top1},
        config={"run": run, "method": {"optim": {"lr": lr}, "tau": 0.01}},
    )


def test_aggregate_groups_by_config_and_data_counts_distinct_seeds(tmp_path):
    runs = tmp_path / "runs"
    for i in range(4):  # the same seed 0, four times
        _fake(runs, f"same{i}", 0, 50.0 + i)
    _fake(runs, "other-lr", 0, 90.0, lr=1e-2)
    _fake(runs, "nan", 1, None)  # NaN top-1 is stored as null
    _fake(runs, "folder-b", 0, 20.0, data="imagefolder:root=/b", fp="b" * 16)
    rows = aggregate(runs)
    _, md_path = write_tables(rows, tmp_path / "t.csv", tmp_path / "t.md")
    md = md_path.read_text()
    table = [line for line in md.splitlines() if line.startswith("| fair")]
    assert len(table) == 3, md  # before: one row, "6 seeds", mean over runs of two configs
    same = next(line for line in table if "optim.lr=0.001" in line and "root=/a" in line)
    other = next(line for line in table if "optim.lr=0.01" in line)
    b = next(line for line in table if "root=/b" in line)
    # seed 0 four times: 1 seed, 4 runs, its value the mean of the duplicates (51.5)
    assert "| 1 | 4 | 51.50 | 61.50 | 51.50 |" in same
    assert "| 1 | 1 | 90.00 |" in other and "| 1 | 1 | 20.00 |" in b
    assert "seed 0 x4" in md
    assert "Excluded runs (1):" in md and "nan" in md.split("Excluded runs (1):")[1]
    assert "top-1 is undefined" in md


def test_aggregate_cli_keeps_two_image_folders_apart(capsys, tmp_path):
    a = make_colour_folder(tmp_path / "a", per_class=2, seed=0)
    b = make_colour_folder(tmp_path / "b", per_class=2, seed=1)
    for name, folder in (("a", a), ("b", b)):  # same method, seed and folder type
        assert zeroshot(capsys, f"imagefolder:root={folder}", tmp_path / "runs" / name)[0] == 0
    rc, out, err = cli(capsys, "aggregate", tmp_path / "runs")
    assert rc == 0, err
    rows = [line for line in out.splitlines() if line.startswith("| zeroshot | ")]  # the run table
    assert len(rows) == 2 and all("| 1 | 1 |" in r for r in rows), out


# ---- 6. a folder holding another run ----------------------------------------------------------


def test_output_folder_of_another_run_is_refused_unless_overwrite(capsys, tmp_path, colours):
    out = tmp_path / "run"
    data = f"imagefolder:root={colours}"
    rc, _, err = cli(capsys, "adapt", "--method", "fair", "--model", TINY, "--data", data, "--out", out,
                     "--no-progress", "--no-cache", "--set", "optim.epochs=1", "--set", "optim.batch_size=6")
    assert rc == 0, err
    fair_files = sorted(p.name for p in out.iterdir())
    assert "checkpoint.pt" in fair_files and "train_log.csv" in fair_files
    results = (out / "results.json").read_text()

    rc, _, err = zeroshot(capsys, data, out)
    assert rc == 2 and str(out) in err and "'fair' run" in err and "--overwrite" in err
    assert (out / "results.json").read_text() == results  # untouched

    rc, _, err = zeroshot(capsys, data, out, "--overwrite")
    assert rc == 0, err
    assert _results(out)["method"] == "zeroshot"
    left = sorted(p.name for p in out.iterdir())
    assert "checkpoint.pt" not in left and "train_log.csv" not in left
    assert not any(n.startswith("fair_") for n in left), left
    # the same settings again into the same folder: allowed (it rewrites the same files)
    assert zeroshot(capsys, data, out)[0] == 0


def test_overwrite_never_clears_a_folder_that_is_not_a_run(capsys, tmp_path, colours):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    rc, _, err = zeroshot(capsys, f"imagefolder:root={colours}", out, "--overwrite")
    assert rc == 2 and "no labelless run" in err
    assert (out / "notes.txt").read_text() == "keep me"


# ---- 7 + 8. output paths checked before any work, damaged classifiers, user errors ----------


def _make_unwritable(path: Path):
    """Make ``path`` unwritable even for root (chmod, else the immutable attribute); return an
    undo function, or None when this machine allows neither."""
    path.chmod(0o555)
    probe = path / ".probe"
    try:
        probe.write_text("x")
    except OSError:
        return lambda: path.chmod(0o755)
    probe.unlink()
    path.chmod(0o755)
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
        return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)
    return None


def test_unwritable_output_folder_fails_before_any_work(capsys, tmp_path, colours, monkeypatch):
    out = tmp_path / "locked"
    out.mkdir()
    undo = _make_unwritable(out)
    if undo is None:
        pytest.skip("cannot make a folder unwritable on this machine")
    import labelless.runner

    def no_work(*a, **k):
        raise AssertionError("work started before the output folder was checked")

    monkeypatch.setattr(labelless.runner, "load_backbone", no_work)
    try:
        rc, out_text, err = cli(capsys, "adapt", "--method", "fair", "--model", TINY, "--data",
                                f"imagefolder:root={colours}", "--out", out, "--no-progress", "--no-cache")
    finally:
        undo()
    assert rc == 2 and str(out) in err and "cannot write" in err and "Traceback" not in err + out_text


@pytest.fixture
def classifier(capsys, tmp_path, colours) -> Path:
    run = tmp_path / "zs"
    assert zeroshot(capsys, f"imagefolder:root={colours}", run)[0] == 0
    return run / "classifier"


@pytest.mark.parametrize("case", ["out is a file", "out under a file", "predict out is a folder",
                                  "truncated safetensors", "lr=nan"])
def test_bad_paths_and_files_exit_2_with_a_message(capsys, tmp_path, colours, request, case):
    classifier = request.getfixturevalue("classifier") if "predict" in case or "safetensors" in case else None
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("x")
    data = f"imagefolder:root={colours}"
    if case == "out is a file":
        args, needle = ["zeroshot", "--model", TINY, "--data", data, "--out", a_file], "is an existing file"
    elif case == "out under a file":
        args, needle = ["zeroshot", "--model", TINY, "--data", data, "--out", a_file / "run"], "which is a file"
    elif case == "predict out is a folder":
        args, needle = ["predict", "--classifier", classifier, "--images", colours, "--out", tmp_path], "is a folder"
    elif case == "truncated safetensors":
        t = classifier / "tensors.safetensors"
        t.write_bytes(t.read_bytes()[:100])
        args, needle = ["predict", "--classifier", classifier, "--images", colours, "--out",
                        tmp_path / "p.csv"], "tensors.safetensors"
    else:
        args, needle = ["adapt", "--method", "flyp-pl", "--model", TINY, "--data", data, "--out",
                        tmp_path / "r", "--set", "optim.lr=nan"], "optim.lr"
    rc, out, err = cli(capsys, *args, "--no-progress", "--no-cache")
    assert rc == 2, (case, err)
    assert err.startswith("error: ") and needle in err and "Traceback" not in out + err, (case, err)


# ---- 10c. a single class ----------------------------------------------------------------------


def test_single_class_task_is_refused(capsys, tmp_path, colours):
    one = tmp_path / "one"
    shutil.copytree(colours / "red", one / "red")
    rc, _, err = zeroshot(capsys, f"imagefolder:root={one}", tmp_path / "r1")
    assert rc == 2 and "at least 2 classes" in err and "'red'" in err
    rc, _, err = cli(capsys, "adapt", "--method", "flyp-pl", "--model", TINY, "--data",
                     f"folder:root={colours}", "--classes", "red", "--out", tmp_path / "r2",
                     "--no-progress", "--no-cache", "--set", "optim.epochs=1")
    assert rc == 2 and "at least 2 classes" in err
    assert not (tmp_path / "r2" / "results.json").exists()


# ---- 10d + 10f. unmatched description keys; warnings as plain messages -------------------------


def test_unmatched_description_keys_warned_and_warnings_printed_plainly(tmp_path, colours):
    (colours / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    desc = tmp_path / "desc.json"
    desc.write_text(json.dumps({"red": ["a red blob."], "green": ["a green blob."], "blue": ["a blue blob."],
                                "purpel": ["a purple blob."]}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "labelless.cli", "zeroshot", "--model", TINY, "--data",
         f"imagefolder:root={colours}", "--texts", f"descriptions:path={desc}", "--scorer", "cupl",
         "--out", str(tmp_path / "run"), "--no-progress", "--no-cache"],
        capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    lines = p.stderr.splitlines()
    assert any(line.startswith("warning: ") and "'purpel'" in line and "match no class" in line for line in lines)
    assert any(line.startswith("warning: ") and "skipped 1 unreadable" in line for line in lines)
    assert "UserWarning" not in p.stderr and ".py:" not in p.stderr, p.stderr


def test_run_folder_messages_go_to_the_labelless_logger(tmp_path, lablog):
    """Resuming a folder without a run record (an older labelless) warns through the
    ``labelless`` logger (library code does not use the warnings module for user messages)."""
    import warnings

    from labelless.runfolder import RunFolder

    out = tmp_path / "old"
    out.mkdir()
    (out / "train_log.csv").write_text("epoch\n1\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RunFolder(out, resume=True).claim({"method": "x"}, {"device": "cpu"})
    msgs = [r.getMessage() for r in lablog.records if r.levelname == "WARNING" and r.name.startswith("labelless")]
    assert msgs and "cannot be checked against this resume" in msgs[0]
