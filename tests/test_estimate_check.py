"""The estimate-vs-labels check: Kendall tau, error per method, rank agreement per task, and the
tables ``labelless aggregate`` / ``labelless bench`` write when runs have labels and estimates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labelless.cli import main
from labelless.eval.estimate_check import check_estimates, estimate_rows, kendall_tau
from labelless.eval.results import write_results


def test_kendall_tau_by_hand():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # one discordant pair (2, 3) of six: (5 - 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # tau-b with a tie in x: pairs (a,b) tie in x; C = 5, D = 0, ties_x = 1 -> 5 / sqrt(6 * 5)
    assert kendall_tau([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / (6 * 5) ** 0.5)
    assert kendall_tau([1], [2]) is None
    assert kendall_tau([1, 1], [1, 2]) is None


def _rows():
    # task A: estimates rank the methods right; task B: zs and fair swapped
    return [
        {"method": "zs", "task": "A", "seed": 0, "top1": 40.0, "est_top1": 44.0, "estimates": {"x": 40.0}},
        {"method": "fair", "task": "A", "seed": 0, "top1": 50.0, "est_top1": 52.0, "estimates": {"x": 30.0}},
        {"method": "fair", "task": "A", "seed": 1, "top1": 52.0, "est_top1": 50.0, "estimates": {"x": 30.0}},
        {"method": "coft", "task": "A", "seed": 0, "top1": 60.0, "est_top1": 55.0, "estimates": {"x": 20.0}},
        {"method": "zs", "task": "B", "seed": 0, "top1": 30.0, "est_top1": 36.0, "estimates": {}},
        {"method": "fair", "task": "B", "seed": 0, "top1": 35.0, "est_top1": 33.0, "estimates": {}},
        {"method": "nolabels", "task": "B", "seed": 0, "top1": None, "est_top1": 70.0, "estimates": {}},
    ]


def test_check_estimates_by_hand():
    c = check_estimates(_rows())
    assert c["per_method"]["zs"] == {"runs": 2, "mae": pytest.approx(5.0), "bias": pytest.approx(5.0)}
    assert c["per_method"]["fair"]["mae"] == pytest.approx((2 + 2 + 2) / 3)
    assert c["per_method"]["fair"]["bias"] == pytest.approx((2 - 2 - 2) / 3)
    assert "nolabels" not in c["per_method"]  # no labels: nothing to compare with
    assert c["per_task"]["A"] == {"methods": 3, "tau": pytest.approx(1.0)}  # fair: seeds averaged
    assert c["per_task"]["B"]["tau"] == pytest.approx(-1.0)
    o = c["overall"]
    assert o["runs"] == 6 and o["tau_positive"] == 1 and o["tasks_with_tau"] == 2
    assert o["mae"] == pytest.approx((4 + 2 + 2 + 5 + 6 + 2) / 6)
    x = check_estimates(_rows(), "x")  # a recorded estimator by name: ranks task A backwards
    assert x["per_task"]["A"]["tau"] == pytest.approx(-1.0) and x["overall"]["runs"] == 4


def _result(root: Path, name: str, top1, est, data="testbed:split=test", bench=None) -> None:
    out = root / name
    metrics = None if top1 is None else {"top1": top1, "top5": None, "mean_per_class": top1}
    write_results(out, method=name.split("-")[0], backbone={"name": "tiny", "spec": "tiny"},
                  data={"name": data.split(":")[0], "spec": data, "split": "test"}, seed=0, metrics=metrics,
                  config={"method": {}}, label_free={"estimated_top1": est, "estimator": "zs_balanced",
                                                     "estimates": {"zs_balanced": est, "ac": 90.0}})
    if bench:
        (out / "bench.json").write_text(json.dumps(bench))


def test_aggregate_shows_the_estimate_and_writes_the_check(tmp_path, capsys):
    runs = tmp_path / "runs"
    _result(runs, "zeroshot-a", 40.0, 43.0)
    _result(runs, "fair-a", 50.0, 49.0)
    _result(runs, "coft-a", 60.0, 58.0)
    _result(runs, "fair-unlabeled", None, 55.0, data="folder:root=x")
    assert main(["aggregate", str(runs)]) == 0
    out = capsys.readouterr().out
    md = (runs / "results.md").read_text()
    assert "est. top-1, no labels (%)" in md.splitlines()[0]
    assert "| 50.00 | 49.00 |" in md  # top-1 then its estimate
    check = (runs / "estimate.md").read_text()
    assert "mean absolute error 2.0 points" in check  # (3 + 1 + 2) / 3
    assert "| testbed:split=test [tiny] | 3 | 1.00 |" in check
    assert "| ac | 3 | 40.0 |" in check  # every recorded estimator, on the labelled runs
    assert "Label-free estimate of top-1" in out


def test_bench_names_label_the_methods(tmp_path):
    runs = tmp_path / "exp"
    _result(runs, "fair-1", 50.0, 49.0, bench={"run": "fair", "data": "task-1", "model": "tb"})
    _result(runs, "fair-2", 52.0, 49.0, bench={"run": "fair-no-las", "data": "task-1", "model": "tb"})
    rows = estimate_rows(runs)
    assert sorted(r["method"] for r in rows) == ["fair", "fair-no-las"]
    assert {r["task"] for r in rows} == {"task-1 [tb]"}


def test_bench_summary_writes_the_check(tmp_path):
    from labelless.bench.harness import summarize

    exp = tmp_path / "exp"
    for k, (run, top1, est) in enumerate([("zs", 40.0, 41.0), ("fair", 50.0, 47.0), ("coft", 55.0, 56.0)]):
        _result(exp, f"{run}-{k}", top1, est, bench={"run": run, "data": "task", "model": "tb"})
    lines: list[str] = []
    files = summarize(exp, out=lines.append)
    assert "est. top-1, no labels (%)" in (exp / "results.md").read_text()
    check = files["estimate"].read_text()
    assert "mean absolute error 1.7 points" in check and "| task [tb] | 3 | 1.00 |" in check
