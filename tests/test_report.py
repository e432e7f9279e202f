"""``labelless report``: one page for a labelled run, an unlabeled run and several runs at once;
bounded image reads; missing images shown as missing; broken run folders named in the error.
(The page in a real browser: tests/test_report_browser.py.)"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_colour_folder

from labelless.cli import main
from labelless.errors import LabellessError
from labelless.eval.label_free import label_free_diagnostics
from labelless.eval.predictions import read_predictions, write_predictions
from labelless.eval.results import write_results
from labelless.report import build_report
from labelless.report.runs import class_galleries

TINY = "openclip:labelless-tiny:random"


def _run(out: Path, data: str, *extra) -> Path:
    rc = main(["zeroshot", "--model", TINY, "--data", data, "--out", str(out), "--no-progress",
               "--cache-dir", str(out.parent / "cache"), *extra])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A labelled run and an unlabeled run (zero-shot, tiny model) on the colour images."""
    root = tmp_path_factory.mktemp("report-runs")
    colours = make_colour_folder(root / "colours")
    labelled = _run(root / "runs" / "labelled", f"imagefolder:root={colours}")
    unlabeled = _run(root / "runs" / "unlabeled", f"folder:root={colours}",
                     "--classes", "blue,green,red", "--texts", "templates:name=imagenet")
    return labelled, unlabeled


def _imgs(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


def test_report_of_one_labelled_run(capsys, runs):
    labelled, _ = runs
    rc = main(["report", str(labelled)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    page = labelled / "report" / "report.html"  # the default place for one run
    assert f"report: {page}" in out
    html = page.read_text()
    assert html.count('<section class="gallery"') == 3  # one gallery per class
    assert 'id="errors"' in html  # labels exist: confusion, per-class accuracy, confused pairs
    for src in _imgs(html):  # every image is a file beside the page: opens from file://
        assert not re.match(r"^[a-z]+:", src) and (page.parent / src).is_file(), src
    assert "http://" not in html and "https://" not in html and "<script" not in html


def test_report_of_an_unlabeled_run_has_no_error_section(runs, tmp_path):
    _, unlabeled = runs
    page = build_report([unlabeled], tmp_path / "rep")
    html = page.read_text()
    assert html.count('<section class="gallery"') == 3
    assert 'id="errors"' not in html and "top-1 with labels" not in html
    assert "estimated top-1 (no labels)" in html


def test_report_compares_several_runs(capsys, runs, tmp_path):
    rc = main(["report", *map(str, runs), "--out", str(tmp_path / "both"), "--per-class", "2"])
    _, err = capsys.readouterr()
    assert rc == 0, err
    html = (tmp_path / "both" / "report.html").read_text()
    assert "labelless report: 2 runs" in html
    assert html.count('<section class="gallery"') == 3  # one per class, a row per run inside
    assert html.count('class="run-row"') == 6
    # the summary table has a column per run
    assert re.search(r"<th>labelled</th>\s*<th>unlabeled</th>", html)


def test_missing_images_are_reported_as_missing(tmp_path, colour_folder):
    labelled = _run(tmp_path / "run", f"imagefolder:root={colour_folder}")
    shutil.rmtree(colour_folder / "green")  # images moved away after the run
    page = build_report([labelled], labelled / "rep")
    html = page.read_text()
    assert 'id="missing"' in html
    assert html.count('class="missing-img"') >= 1
    assert str(colour_folder / "green") in html  # named in the list of missing images
    assert not any("green" in s for s in _imgs(html))  # no <img> for a missing file


def _synthetic_run(root: Path, n: int, classes: list[str]) -> Path:
    """A run folder with ``n`` predictions of images that do not exist (no model needed)."""
    g = torch.Generator().manual_seed(0)
    probs = torch.randn(n, len(classes), generator=g).mul(3).softmax(dim=1)
    ref = torch.randn(n, len(classes), generator=g).mul(3).softmax(dim=1)
    paths = [str(root / "images" / f"img{i:06d}.jpg") for i in range(n)]
    write_predictions(root / "predictions.csv", paths, None, probs, ref, classes)
    write_results(root, method="zeroshot", backbone={"name": "tiny"}, data={"name": "big", "n": n},
                  seed=0, metrics=None, config={}, label_free=label_free_diagnostics(probs, ref, classes))
    return root


def test_report_opens_a_bounded_number_of_images(tmp_path, monkeypatch):
    classes = [f"class{k}" for k in range(5)]
    run = _synthetic_run(tmp_path / "big", 20_000, classes)
    opened = []
    import PIL.Image

    real_open = PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda p, *a, **k: opened.append(p) or real_open(p, *a, **k))
    page = build_report([run], tmp_path / "rep", per_class=3)
    # 5 classes x (3 confident + 3 borderline) + 6 changed pairs x 4 examples, at most
    assert 0 < len(opened) <= 5 * 6 + 6 * 4
    assert "images of the galleries could not be read" in page.read_text()


def test_galleries_pick_most_confident_and_borderline():
    from labelless.eval.predictions import Prediction

    preds = [Prediction(i, f"p{i}", None, "a" if i < 6 else "b", conf, margin, None, None)
             for i, (conf, margin) in enumerate([(0.9, 0.8), (0.5, 0.1), (0.7, 0.4), (0.95, 0.9),
                                                 (0.4, 0.02), (0.6, 0.3), (0.8, 0.5)])]
    g = class_galleries(preds, ["a", "b", "c"], per_class=2)
    assert [p.index for p in g["a"]["confident"]] == [3, 0]
    assert [p.index for p in g["a"]["borderline"]] == [4, 1]
    assert [p.index for p in g["b"]["confident"]] == [6] and g["b"]["borderline"] == []
    assert g["c"] == {"confident": [], "borderline": []}


def test_broken_run_folders_are_named(capsys, runs, tmp_path):
    labelled, _ = runs
    no_preds = tmp_path / "no-preds"
    shutil.copytree(labelled, no_preds)
    (no_preds / "predictions.csv").unlink()
    with pytest.raises(LabellessError, match=r"no-preds/predictions\.csv"):
        build_report([no_preds], tmp_path / "r1")
    broken = tmp_path / "broken"
    shutil.copytree(labelled, broken)
    (broken / "results.json").write_text('{"schema_version": 1, "method": ')
    rc = main(["report", str(broken)])
    _, err = capsys.readouterr()
    assert rc == 2 and "broken/results.json" in err and "not valid JSON" in err
    damaged = tmp_path / "damaged"
    shutil.copytree(labelled, damaged)
    text = (damaged / "predictions.csv").read_text().splitlines()
    (damaged / "predictions.csv").write_text("\n".join(text[:3] + ["x,,,"] + text[3:]) + "\n")
    with pytest.raises(LabellessError, match=r"damaged/predictions\.csv' line 4"):
        build_report([damaged], tmp_path / "r2")
    old = tmp_path / "old"
    shutil.copytree(labelled, old)
    rec = json.loads((old / "results.json").read_text())
    rec.pop("label_free")
    (old / "results.json").write_text(json.dumps(rec))
    with pytest.raises(LabellessError, match="no label_free"):
        build_report([old], tmp_path / "r3")
    assert len(read_predictions(labelled)) == 18


def test_demo_ends_with_a_report(tmp_path, lablog):
    """``labelless demo`` writes the report of all its runs and says where (the training-free
    entries only, to stay fast; the testbed is the one the learning tests build)."""
    from labelless.demo import demo
    from labelless.methods.base import Runtime
    from labelless.testbed import ensure_testbed

    ensure_testbed()
    rows = demo(tmp_path / "demo", Runtime(device="cpu", progress=False, cache_dir=str(tmp_path / "cache")),
                only=["zero-shot"])
    page = tmp_path / "demo" / "report" / "report.html"
    assert f"report: {page}" in lablog.text  # on the labelless logger (stdout on the CLI)
    html = page.read_text()
    assert len(rows) == 2 and html.count('<section class="gallery"') == 10
    assert html.count('class="run-row"') == 10 * 2
    assert all(r["est_top1"] is not None for r in rows)
