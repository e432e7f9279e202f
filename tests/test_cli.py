"""The ``labelless`` command end to end on synthetic data: zeroshot (clip, cupl, wca) writes a
complete results.json and plot, predict writes the CSV (and agrees with the run), list and
aggregate work, and every bad input exits with status 2 and a message naming it."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelless.cli import main

TINY = "openclip:labelless-tiny:random"
REPO = Path(__file__).resolve().parents[1]


def cli(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def zeroshot(capsys, data, out, *extra, cache=None):
    return cli(capsys, "zeroshot", "--model", TINY, "--data", data, "--out", out, "--no-progress",
               "--cache-dir", cache or Path(out).parent / "cache", *extra)


@pytest.fixture
def descriptions(tmp_path):
    path = tmp_path / "desc.json"
    path.write_text(json.dumps({
        "red": ["a red square.", "something crimson."],
        "green": ["a green square.", "grass-coloured noise.", "a leafy green image."],
        "blue": ["a blue square."],
    }))
    return path


def _results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


@pytest.mark.parametrize("scorer", ["clip", "cupl", "wca"])
def test_zeroshot_writes_results(capsys, tmp_path, colour_folder, descriptions, scorer):
    run = tmp_path / f"run-{scorer}"
    extra = ["--scorer", scorer, "--seed", "3"]
    if scorer != "clip":
        extra += ["--texts", f"descriptions:path={descriptions}"]
    if scorer == "wca":
        extra += ["--crops", "3"]
    rc, out, err = zeroshot(capsys, f"imagefolder:root={colour_folder}", run, *extra)
    assert rc == 0, err
    assert "top-1" in out and str(run / "results.json") in out
    r = _results(run)
    assert r["method"] == "zeroshot"
    assert r["backbone"]["spec"] == TINY and r["backbone"]["fingerprint"].startswith("openclip|labelless-tiny|")
    assert r["data"]["spec"] == f"imagefolder:root={colour_folder}" and r["data"]["n"] == 18
    assert r["data"]["n_skipped"] == 0
    assert r["seed"] == 3
    m = r["metrics"]
    for key in ("top1", "top5", "mean_per_class", "per_class", "confusion"):
        assert key in m
    assert 0 <= m["top1"] <= 100 and set(m["per_class"]) == {"red", "green", "blue"}
    conf = np.array(m["confusion"])
    assert conf.shape == (3, 3) and conf.sum() == 18 and (conf.sum(1) == 6).all()
    assert m["top1"] == pytest.approx(100 * np.trace(conf) / 18)
    assert r["config"]["method"]["scorer"] == scorer
    assert r["config"]["run"]["model"] == TINY
    if scorer == "wca":
        assert r["config"]["method"]["crops"] == 3
    prov = r["provenance"]
    assert len(prov["git"]["sha"]) == 40 and isinstance(prov["git"]["dirty"], bool)
    assert prov["versions"]["torch"] and prov["versions"]["open_clip_torch"]
    assert r["resources"]["wall_s"] > 0 and r["resources"]["peak_rss_mb"] > 0
    assert (run / "confusion.png").stat().st_size > 1000
    assert (run / "classifier" / "artifact.json").is_file()


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_csv_and_classifier_agrees_with_the_run(capsys, tmp_path, colour_folder, descriptions):
    run = tmp_path / "run"
    rc, _, err = zeroshot(capsys, f"imagefolder:root={colour_folder}", run, "--scorer", "cupl",
                          "--texts", f"descriptions:path={descriptions}")
    assert rc == 0, err
    # with the saved classifier: the predictions reproduce the run's confusion matrix
    out_csv = tmp_path / "pred_clf.csv"
    rc, out, err = cli(capsys, "predict", "--images", colour_folder, "--classifier", run / "classifier",
                       "--out", out_csv, "--topk", "2", "--no-progress", "--cache-dir", tmp_path / "cache")
    assert rc == 0, err
    rows = _read_csv(out_csv)
    assert list(rows[0]) == ["path", "predicted", "confidence", "top2"] and len(rows) == 18
    r = _results(run)
    names = r["metrics"]["classnames"]
    conf = np.zeros((3, 3), int)
    for row in rows:
        true = Path(row["path"]).parent.name
        conf[names.index(true), names.index(row["predicted"])] += 1
        top = [t.split(":") for t in row["top2"].split(";")]
        assert len(top) == 2 and top[0][0] == row["predicted"]
        assert float(top[0][1]) == pytest.approx(float(row["confidence"]), abs=1e-4)
        assert float(top[0][1]) >= float(top[1][1])
        assert 0 < float(row["confidence"]) <= 1
    assert conf.tolist() == r["metrics"]["confusion"]
    # without a classifier: model + classes (+ the same texts) give the same predictions
    out2 = tmp_path / "pred_model.csv"
    rc, _, err = cli(capsys, "predict", "--images", colour_folder, "--model", TINY,
                     "--classes", ",".join(names), "--texts", f"descriptions:path={descriptions}",
                     "--scorer", "cupl", "--out", out2, "--no-progress", "--no-cache")
    assert rc == 0, err
    rows2 = _read_csv(out2)
    assert list(rows2[0])[-1] == "top3"
    assert [(x["path"], x["predicted"]) for x in rows2] == [(x["path"], x["predicted"]) for x in rows]
    # predict without classifier or model is a usage error
    rc, _, err = cli(capsys, "predict", "--images", colour_folder, "--no-progress")
    assert rc == 2 and "--classifier" in err


def test_list(capsys):
    expect = {
        "backbones": ["openclip:labelless-tiny:random", "openclip:ViT-B-32:laion2b_s34b_b79k", "hf:"],
        "methods": ["zeroshot"],
        "datasets": ["folder", "imagefolder", "csv", "eurosat"],
        "scorers": ["clip", "cupl", "wca"],
        "views": ["global", "crops", "weak", "strong"],
        "texts": ["names", "templates", "descriptions", "captions"],
    }
    for what, names in expect.items():
        rc, out, err = cli(capsys, "list", what)
        assert rc == 0, err
        for n in names:
            assert n in out, (what, n)
    rc, out, _ = cli(capsys, "list", "methods", "-v")
    assert "scorer = 'clip'" in out
    rc, out, _ = cli(capsys, "list", "backbones", "labelless-tiny")
    lines = out.split()
    assert lines and all("labelless-tiny" in n for n in lines)


def test_aggregate_two_runs(capsys, tmp_path, colour_folder, descriptions):
    runs = tmp_path / "runs"
    for scorer in ("clip", "cupl"):
        rc, _, err = zeroshot(capsys, f"imagefolder:root={colour_folder}", runs / scorer,
                              "--scorer", scorer, "--texts", f"descriptions:path={descriptions}")
        assert rc == 0, err
    rc, out, err = cli(capsys, "aggregate", runs, "--out", tmp_path / "table")
    assert rc == 0, err
    rows = _read_csv(tmp_path / "table" / "results.csv")
    assert len(rows) == 2 and {r["method"] for r in rows} == {"zeroshot"}
    tops = sorted(float(r["top1"]) for r in rows)
    expected = sorted(_results(runs / s)["metrics"]["top1"] for s in ("clip", "cupl"))
    assert tops == pytest.approx(expected)
    assert (tmp_path / "table" / "results.md").read_text() in out
    assert (tmp_path / "table" / "results.png").is_file()
    rc, _, err = cli(capsys, "aggregate", tmp_path / "table")
    assert rc == 2 and "no results.json" in err


# ---- awkward but valid images ------------------------------------------------------------
def test_corrupt_image_is_skipped_and_counted(capsys, tmp_path, colour_folder):
    bad = colour_folder / "red" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    run = tmp_path / "run"
    rc, _, err = zeroshot(capsys, f"imagefolder:root={colour_folder}", run)
    assert rc == 0, err
    assert "skipped 1 unreadable" in err  # the labelless logger's warning, on stderr
    r = _results(run)
    assert r["data"]["n_skipped"] == 1 and r["data"]["n"] == 18
    assert r["data"]["skipped"][0][0] == str(bad)
    assert np.array(r["metrics"]["confusion"]).sum() == 18


def test_unusual_image_modes_work(capsys, tmp_path):
    root = tmp_path / "modes"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        rgb = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
        Image.fromarray(rgb[..., 0]).save(root / cls / "gray.png")  # L
        Image.fromarray(rgb).convert("CMYK").save(root / cls / "cmyk.jpg")
        deep = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
        assert deep.mode.startswith("I;16")
        deep.save(root / cls / "deep16.png")
        Image.fromarray(rgb).convert("RGBA").save(root / cls / "alpha.png")
        Image.fromarray(rgb).convert("P").save(root / cls / "palette.gif")
        Image.fromarray(rgb[:1, :1]).save(root / cls / "one_pixel.png")
    run = tmp_path / "run"
    rc, _, err = zeroshot(capsys, f"imagefolder:root={root}", run, "--scorer", "wca", "--crops", "2")
    assert rc == 0, err
    r = _results(run)
    assert r["data"]["n"] == 12 and r["data"]["n_skipped"] == 0


# ---- bad inputs: exit 2, message names the input, no traceback ----------------------------
def _split_root(tmp_path):
    root = tmp_path / "fake_eurosat"
    (root / "2750" / "Forest").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "2750" / "Forest" / "Forest_1.jpg")
    split = {"train": [], "val": [],
             "test": [["Forest/Forest_1.jpg", 0, "Forest"], ["Forest/Forest_999.jpg", 0, "Forest"]]}
    (root / "split.json").write_text(json.dumps(split))
    return root


@pytest.fixture
def bad_inputs(tmp_path, colour_folder, descriptions):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "empty_classes.txt").write_text("\n# nothing\n")
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"red": ["a red thing."], "green": ["a green thing."]}))
    good = f"imagefolder:root={colour_folder}"
    split_root = _split_root(tmp_path)
    return {
        "missing dir": (["--data", "folder:root=/no/such/dir", "--classes", "a,b"], "/no/such/dir"),
        "empty dir": (["--data", f"folder:root={empty}", "--classes", "a,b"], str(empty)),
        "empty class list": (["--data", f"folder:root={colour_folder}", "--classes",
                              tmp_path / "empty_classes.txt"], "empty_classes.txt"),
        "duplicate classes": (["--data", f"folder:root={colour_folder}", "--classes", "red,blue,red"], "red"),
        "descriptions missing classes": (["--data", good, "--scorer", "cupl", "--texts",
                                          f"descriptions:path={partial}"], "blue"),
        "missing description file": (["--data", good, "--scorer", "cupl", "--texts",
                                      "descriptions:path=/no/such/desc.json"], "/no/such/desc.json"),
        "unknown tag": (["--data", good, "--model", "openclip:ViT-B-32:nosuchtag"], "nosuchtag"),
        "unknown arch": (["--data", good, "--model", "openclip:ViT-Q-99:random"], "ViT-Q-99"),
        "unknown source": (["--data", good, "--model", "clipz:foo"], "clipz"),
        "unknown data set": (["--data", "nosuchset:root=x"], "nosuchset"),
        "bad data option": (["--data", f"imagefolder:rot={colour_folder}"], "rot"),
        "split with missing files": (["--data", f"eurosat:root={split_root},split_file={split_root / 'split.json'}"],
                                     "Forest_999.jpg"),
        "bad --set": (["--data", good, "--set", "crops=zero"], "crops"),
    }


CASES = ["missing dir", "empty dir", "empty class list", "duplicate classes",
         "descriptions missing classes", "missing description file", "unknown tag", "unknown arch",
         "unknown source", "unknown data set", "bad data option", "split with missing files", "bad --set"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exit_2(capsys, tmp_path, bad_inputs, case):
    args, needle = bad_inputs[case]
    if "--model" not in args:
        args = ["--model", TINY, *args]
    rc, out, err = cli(capsys, "zeroshot", *args, "--out", tmp_path / "run", "--no-progress",
                       "--cache-dir", tmp_path / "cache")
    assert rc == 2, (case, err)
    assert err.startswith("error: ") and needle in err, (case, err)
    assert "Traceback" not in err + out
    assert not (tmp_path / "run" / "results.json").exists()


def test_subprocess_entry_point(tmp_path, colour_folder):
    exe = REPO / ".venv" / "bin" / "labelless"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "labelless.cli"]
    env = {**os.environ, "LABELLESS_CACHE": str(tmp_path / "cache")}
    run = tmp_path / "run"
    p = subprocess.run(cmd + ["zeroshot", "--model", TINY, "--data", f"imagefolder:root={colour_folder}",
                              "--out", str(run), "--no-progress"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    assert _results(run)["data"]["n"] == 18 and (tmp_path / "cache" / "features").is_dir()
    assert "results:" in p.stdout and "Traceback" not in p.stderr


# ---- real data ------------------------------------------------------------------------------
@pytest.mark.slow  # 2,000 real images x 9 views
def test_eurosat_wca_with_tiny_model(capsys, tmp_path, shared_data):
    root = shared_data / "eurosat"
    desc = shared_data / "text" / "wca" / "prompts" / "eurosat" / "cupl.json"
    if not (root / "split_zhou_EuroSAT.json").is_file() or not desc.is_file():
        pytest.skip("EuroSAT or the WCA descriptions are not in ../shared/data")
    run = tmp_path / "eurosat"
    t0 = time.time()
    rc, out, err = zeroshot(capsys, f"eurosat:root={root},split=test,limit=2000", run, "--scorer", "wca",
                            "--crops", "8", "--texts", f"descriptions:path={desc},aliases=eurosat-wca",
                            "--batch-size", "256")
    assert rc == 0, err
    r = _results(run)
    assert r["data"]["n"] == 2000 and r["data"]["num_classes"] == 10 and r["data"]["split"] == "test"
    assert np.array(r["metrics"]["confusion"]).sum() == 2000
    assert 0 <= r["metrics"]["top1"] <= 100
    print(f"eurosat test split (2,000 of 8,100), WCA 8 crops, tiny model: {time.time() - t0:.1f}s")


QUICK = {  # minimal settings: a plumbing run on real images, not a result
    "fair": ["--set", "optim.epochs=1", "--set", "optim.batch_size=8", "--set", "n_crops=2", "--set", "k=1"],
    "region-probe": ["--set", "n_regions=4", "--set", "epochs=2"],
    "coft": ["--set", "n_ctx=2", "--set", "vpt_tokens=2", "--set", "phase1.epochs=1", "--set", "phase1.batch_size=8",
             "--set", "phase2.epochs=1", "--set", "phase2.batch_size=8"],
    "coft+": ["--set", "n_ctx=2", "--set", "vpt_tokens=2", "--set", "phase1.epochs=1", "--set", "phase1.batch_size=8",
              "--set", "phase2.epochs=1", "--set", "phase2.batch_size=8", "--set", "moco_queue=16"],
}


@pytest.mark.parametrize("method", list(QUICK))
def test_adapt_on_eurosat_with_tiny_model(capsys, tmp_path, shared_data, method):
    root = shared_data / "eurosat"
    desc = shared_data / "text" / "wca" / "prompts" / "eurosat" / "cupl.json"
    if not (root / "split_zhou_EuroSAT.json").is_file() or not desc.is_file():
        pytest.skip("EuroSAT or the WCA descriptions are not in ../shared/data")
    run = tmp_path / method
    rc, out, err = cli(capsys, "adapt", "--method", method, "--model", TINY, "--no-progress",
                       "--data", f"eurosat:root={root},split=train,limit=40",
                       "--eval-data", f"eurosat:root={root},split=test,limit=30",
                       "--texts", f"descriptions:path={desc},aliases=eurosat-wca", "--out", run,
                       "--cache-dir", tmp_path / "cache", *QUICK[method])
    assert rc == 0, err
    r = _results(run)
    assert r["method"] == method
    assert r["data"]["n"] == 30 and r["data"]["num_classes"] == 10
    assert np.array(r["metrics"]["confusion"]).sum() == 30
    assert (run / "classifier").is_dir()


def _imported_by(*args: str) -> tuple[int, set[str]]:
    """Exit code of ``python -m labelless.cli ARGS`` in a fresh process and the top-level
    packages it imported (from ``-X importtime``, which lists every module actually loaded)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "labelless.cli", *args],
                       capture_output=True, text=True, env=env, timeout=120)
    mods = {line.split("|")[-1].strip().split(".")[0] for line in p.stderr.splitlines()
            if line.startswith("import time:") and "|" in line}
    assert "labelless" in mods  # the log was read
    return p.returncode, mods


@pytest.mark.parametrize("args, code", [(["--help"], 0), (["zeroshot", "--bogus"], 2),
                                        (["adapt", "--help"], 0)])
def test_help_and_argument_errors_do_not_import_torch(args, code):
    rc, mods = _imported_by(*args)
    assert rc == code
    assert not mods & {"torch", "torchvision", "open_clip", "transformers"}, mods & {"torch", "open_clip"}


def test_list_imports_no_open_clip_torchvision_or_transformers():
    """`labelless list methods` needs the registries (so torch), not the model libraries."""
    rc, mods = _imported_by("list", "methods")
    assert rc == 0 and "torch" in mods
    assert not mods & {"torchvision", "open_clip", "transformers"}
