"""Tests for labelless.eval (metrics, results, plots, aggregation) and labelless.utils.io."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path

import pytest
import torch

from labelless.errors import LabellessError
from labelless.eval import (
    Metrics,
    RunRecorder,
    aggregate,
    classification_metrics,
    load_results,
    plot_bars,
    plot_confusion,
    plot_curves,
    provenance,
    write_results,
    write_tables,
)
from labelless.utils.io import (
    atomic_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    sha256_file,
    stable_hash,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- metrics


def _onehot_logits(ranking: list[list[int]], num_classes: int) -> torch.Tensor:
    """Logits whose descending order per row is ``ranking[i]`` (remaining classes lowest)."""
    logits = torch.zeros(len(ranking), num_classes)
    for i, order in enumerate(ranking):
        for r, c in enumerate(order):
            logits[i, c] = float(num_classes - r)
    return logits


def test_metrics_by_hand_six_classes():
    names = ["a", "b", "c", "d", "e", "f"]
    # Per row: predicted classes best-first; label for each row below.
    ranking = [
        [0, 1, 2, 3, 4],  # label 0 -> top1 hit
        [1, 0, 2, 3, 4],  # label 0 -> top1 miss (pred 1), top5 hit
        [5, 4, 3, 2, 0],  # label 1 -> top5 miss (1 not in first 5)
        [1, 2, 3, 4, 5],  # label 1 -> top1 hit
        [2, 0, 1, 3, 4],  # label 2 -> top1 hit
        [3, 4, 5, 0, 1],  # label 2 -> top1 miss (pred 3), top5 miss
    ]
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    m = classification_metrics(_onehot_logits(ranking, 6), labels, 6, names)
    assert m.n == 6 and m.n_unlabeled == 0
    assert m.top1 == pytest.approx(100 * 3 / 6)
    assert m.top5 == pytest.approx(100 * 4 / 6)
    # Recall: a 1/2, b 1/2, c 1/2 -> mean 50; d, e, f absent -> NaN, not counted.
    assert m.mean_per_class == pytest.approx(50.0)
    assert m.per_class["a"] == pytest.approx(50.0)
    assert all(math.isnan(m.per_class[c]) for c in "def")
    expected_cm = [[0] * 6 for _ in range(6)]
    for true, pred in [(0, 0), (0, 1), (1, 5), (1, 1), (2, 2), (2, 3)]:
        expected_cm[true][pred] += 1
    assert m.confusion == expected_cm
    assert sum(map(sum, m.confusion)) == m.n
    assert [sum(r) for r in m.confusion] == [2, 2, 2, 0, 0, 0]
    assert m.summary() == "top-1 50.0%  top-5 66.7%  mean/class 50.0%  (n=6)"


def test_top5_nan_with_four_classes_and_with_hard_predictions():
    logits = torch.tensor([[3.0, 1.0, 0.0, 0.0], [0.0, 2.0, 1.0, 0.0]])
    m = classification_metrics(logits, torch.tensor([0, 2]), 4, list("wxyz"))
    assert math.isnan(m.top5)
    assert m.top1 == pytest.approx(50.0)
    d = m.to_dict()
    assert d["top5"] is None and d["per_class"]["x"] is None
    json.dumps(d, allow_nan=False)  # strict JSON
    assert "top-5 n/a" in m.summary()
    # Hard predictions: top-1 defined, top-5 not, even with many classes.
    m2 = classification_metrics(torch.tensor([1, 2, 3]), torch.tensor([1, 2, 0]), 10)
    assert m2.top1 == pytest.approx(200 / 3) and math.isnan(m2.top5)
    assert list(m2.per_class) == [str(i) for i in range(10)]


def test_unknown_labels_ignored():
    pred = torch.tensor([0, 1, 1, 2, 0])
    labels = torch.tensor([0, -1, 1, -1, 1])
    m = classification_metrics(pred, labels, 3, ["x", "y", "z"])
    assert m.n == 3 and m.n_unlabeled == 2
    assert m.top1 == pytest.approx(100 * 2 / 3)
    assert sum(map(sum, m.confusion)) == 3
    assert m.confusion == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert "[2 unlabeled ignored]" in m.summary()
    # Everything unknown: metrics undefined, no crash.
    m0 = classification_metrics(pred, torch.full((5,), -1), 3)
    assert m0.n == 0 and m0.n_unlabeled == 5 and math.isnan(m0.top1)
    assert math.isnan(m0.mean_per_class)


def test_mean_per_class_differs_on_imbalanced_data():
    # 8 samples of class 0 all right, 2 of class 1 all wrong (predicted 0).
    labels = torch.tensor([0] * 8 + [1] * 2)
    pred = torch.zeros(10, dtype=torch.long)
    m = classification_metrics(pred, labels, 2, ["major", "minor"])
    assert m.top1 == pytest.approx(80.0)
    assert m.mean_per_class == pytest.approx((100.0 + 0.0) / 2)
    assert m.per_class == {"major": 100.0, "minor": 0.0}
    assert m.confusion == [[8, 0], [2, 0]]


def test_metrics_roundtrip_and_input_validation():
    m = classification_metrics(torch.randn(20, 7), torch.randint(0, 7, (20,)), 7)
    m2 = Metrics.from_dict(json.loads(json.dumps(m.to_dict())))
    assert m2.to_dict() == m.to_dict()
    with pytest.raises(ValueError, match="labels"):
        classification_metrics(torch.randn(2, 3), torch.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match="shape"):
        classification_metrics(torch.randn(2, 4), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="class names"):
        classification_metrics(torch.randn(2, 3), torch.tensor([0, 1]), 3, ["a", "b"])


# --------------------------------------------------------------------------- io


def test_atomic_writes_roundtrip(tmp_path):
    p = atomic_write_text(tmp_path / "sub" / "a.txt", "héllo")
    assert p.read_text(encoding="utf-8") == "héllo"
    atomic_write_bytes(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    j = atomic_write_json(tmp_path / "x.json", {"a": [1, 2.5, None]})
    assert json.loads(j.read_text()) == {"a": [1, 2.5, None]}
    assert sha256_file(p) == hashlib.sha256(b"\x00\x01").hexdigest()
    assert sorted(os.listdir(tmp_path)) == ["sub", "x.json"]  # no temp files left


def test_atomic_save_keeps_old_file_when_writer_raises(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old contents")
    seen = []

    def bad_writer(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_bytes(b"half-written")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save(target, bad_writer)
    assert target.read_bytes() == b"old contents"
    assert seen[0].suffix == ".safetensors" and seen[0].parent == tmp_path
    assert os.listdir(tmp_path) == ["model.safetensors"]  # temp removed
    # Unserialisable JSON fails before touching the file.
    with pytest.raises(TypeError):
        atomic_write_json(target, {"x": object()})
    assert target.read_bytes() == b"old contents"
    atomic_save(target, lambda tmp: tmp.write_bytes(b"new"))
    assert target.read_bytes() == b"new"


def test_stable_hash():
    base = {"a": 1, "b": [1.5, {"c": "x", "d": None}], "e": (True, Path("/data/x"))}
    same_other_order = {"e": (True, Path("/data/x")), "b": [1.5, {"d": None, "c": "x"}], "a": 1}
    h = stable_hash(base)
    assert len(h) == 16 and all(ch in "0123456789abcdef" for ch in h)
    assert stable_hash(same_other_order) == h
    assert len(stable_hash(base, length=40)) == 40
    variants = [
        {**base, "a": 2},
        {**base, "a": 1.0},
        {**base, "a": "1"},
        {**base, "b": [1.5000001, {"c": "x", "d": None}]},
        {**base, "b": [1.5, {"c": "y", "d": None}]},
        {**base, "b": [1.5, {"c": "x", "d": 0}]},
        {**base, "b": [1.5, {"c": "x"}]},
        {**base, "e": (False, Path("/data/x"))},
        {**base, "e": (True, Path("/data/y"))},
        {**base, "f": None},
    ]
    hashes = {stable_hash(v) for v in variants}
    assert h not in hashes and len(hashes) == len(variants)
    with pytest.raises(TypeError):
        stable_hash({"a": object()})


# --------------------------------------------------------------------------- results


def test_results_roundtrip_with_provenance(tmp_path):
    m = classification_metrics(torch.tensor([[2.0, 1.0], [0.0, 1.0]]), torch.tensor([0, 0]), 2)
    with RunRecorder() as rec:
        sum(range(1000))
    assert rec.wall_s is not None and rec.wall_s >= 0
    assert rec.peak_rss_mb is None or rec.peak_rss_mb > 0
    path = write_results(
        tmp_path / "run",
        method="zeroshot",
        backbone={"spec": "openclip:ViT-B-32:random", "name": "ViT-B-32"},
        data={"spec": "folder:root=x", "name": "toy", "split": "test"},
        seed=3,
        metrics=m,
        config={"lr": 1e-3, "out": tmp_path, "views": ("global",)},
        recorder=rec,
        extra={"loss": [1.0, float("nan")]},
    )
    assert path == tmp_path / "run" / "results.json"
    json.loads(path.read_text(), parse_constant=pytest.fail)  # strict JSON: no NaN tokens
    r = load_results(path.parent)
    assert r["schema_version"] == 1 and r["method"] == "zeroshot" and r["seed"] == 3
    assert r["split"] == "test"
    assert r["metrics"]["top1"] == 50.0 and r["metrics"]["top5"] is None
    assert r["metrics"]["confusion"] == [[1, 1], [0, 0]]
    assert r["config"] == {"lr": 1e-3, "out": str(tmp_path), "views": ["global"]}
    assert r["extra"]["loss"] == [1.0, None]
    assert set(r["resources"]) == {"wall_s", "peak_rss_mb", "peak_cuda_mb"}
    prov = r["provenance"]
    for key in ("git", "versions", "python", "platform", "argv", "timestamp_utc"):
        assert key in prov
    assert set(prov["git"]) == {"sha", "dirty"}
    assert prov["versions"]["labelless"] and prov["versions"]["torch"]
    assert prov["timestamp_utc"].endswith("+00:00")


def test_provenance_has_no_hostname():
    import socket

    text = json.dumps(provenance())
    host = socket.gethostname()
    if len(host) >= 4:  # short names could appear by chance inside other strings
        assert host not in text


def test_load_results_errors(tmp_path):
    with pytest.raises(LabellessError, match="no results file"):
        load_results(tmp_path / "missing")
    bad = tmp_path / "results.json"
    bad.write_text("{not json")
    with pytest.raises(LabellessError, match="not valid JSON"):
        load_results(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(LabellessError, match="not a labelless results file"):
        load_results(bad)


# --------------------------------------------------------------------------- plots


def _assert_png(path: Path) -> None:
    data = Path(path).read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 1000


def test_plots_write_png(tmp_path):
    names = [f"class number {i}" for i in range(12)]
    cm = torch.randint(0, 5, (12, 12)).tolist()
    cm[3] = [0] * 12  # an empty row must not divide by zero
    p = plot_confusion(cm, names, tmp_path / "figs" / "cm.png", "toy confusion")
    _assert_png(p)
    big = plot_confusion(
        torch.eye(60).long() * 3,
        [f"c{i}" for i in range(60)],
        tmp_path / "cm60.png",
        "60",
        normalize=False,
    )
    _assert_png(big)
    table = {
        "zeroshot": {"eurosat": 45.2, "dtd": 43.9},
        "fair": {"eurosat": 70.1, "dtd": float("nan")},
    }
    _assert_png(plot_bars(table, tmp_path / "bars.png", "methods", "top-1 (%)"))
    curves = {"train loss": [2.0, 1.5, 1.1, None, 0.9], "val acc": [0.1, 0.3]}
    _assert_png(plot_curves(curves, tmp_path / "curves.png", "training", "epoch", "value"))
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temp files left
    with pytest.raises(ValueError):
        plot_confusion([[1, 2], [3, 4]], ["a"], tmp_path / "x.png", "bad")


# --------------------------------------------------------------------------- aggregate


def _fake_run(root: Path, name: str, method: str, seed: int, top1: float, top5: float | None):
    metrics = {"top1": top1, "top5": top5, "mean_per_class": top1 - 1.0, "n": 10}
    write_results(
        root / name,
        method=method,
        backbone={"spec": "openclip:ViT-B-32:laion", "name": "ViT-B-32"},
        data={"name": "eurosat", "split": "test"},
        seed=seed,
        metrics=metrics,
        config={"seed": seed},
    )


def test_aggregate_mean_std_over_seeds(tmp_path, lablog):
    runs = tmp_path / "runs"
    _fake_run(runs, "a/seed1", "fair", 1, 70.0, 95.0)
    _fake_run(runs, "a/seed2", "fair", 2, 74.0, None)
    _fake_run(runs, "b/seed1", "zeroshot", 1, 45.5, 90.0)
    (runs / "broken").mkdir()
    (runs / "broken" / "results.json").write_text("{truncated")
    rows = aggregate(runs)
    warned = [r.getMessage() for r in lablog.records if r.levelname == "WARNING" and r.name.startswith("labelless")]
    assert warned and all(re.search(r"(?s)skipped 1 invalid results file.*broken", m) for m in warned)
    assert len(rows) == 3
    fair = [r for r in rows if r["method"] == "fair"]
    assert [r["seed"] for r in fair] == [1, 2]
    assert fair[0]["backbone"] == "ViT-B-32" and fair[0]["dataset"] == "eurosat"
    assert fair[0]["split"] == "test" and fair[0]["path"] == os.path.join(
        "a", "seed1", "results.json"
    )

    csv_path, md_path = write_tables(rows, tmp_path / "t.csv", tmp_path / "t.md")
    csv_lines = csv_path.read_text().splitlines()
    assert len(csv_lines) == 4 and csv_lines[0].startswith(
        "method,backbone,dataset,split,seed,top1"
    )
    md = md_path.read_text()
    fair_line = next(line for line in md.splitlines() if line.startswith("| fair"))
    # top-1: mean 72, sample std sqrt(((70-72)^2 + (74-72)^2) / 1) = 2.83; top-5 only one value,
    # which the cell says (it is not averaged over the same runs as top-1).
    assert "| 2 | 2 | 72.00 ± 2.83 | 95.00 (1 of 2 seeds) | 71.00 ± 2.83 |" in fair_line
    zs_line = next(line for line in md.splitlines() if line.startswith("| zeroshot"))
    assert "| 1 | 1 | 45.50 | 90.00 | 44.50 |" in zs_line
    # Grouping by method only still separates the two methods.
    _, md2 = write_tables(rows, tmp_path / "u.csv", tmp_path / "u.md", group_by=("method",))
    assert "| method | seeds | runs |" in md2.read_text()
    with pytest.raises(LabellessError):
        aggregate(tmp_path / "nope")
