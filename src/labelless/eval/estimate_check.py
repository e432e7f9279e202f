"""How good is the label-free accuracy estimate? Measured where labels exist.

Given many runs (methods x tasks x seeds) whose ``results.json`` hold both the true top-1
(``metrics.top1``) and the label-free estimates (``label_free.estimated_top1`` and every
registered estimator under ``label_free.estimates``), :func:`check_estimates` reports

* per method: the mean absolute error ``mean |estimate - top-1|`` over its runs and the mean
  signed error (bias: positive = the estimate is too optimistic);
* per task: Kendall's tau-b between the estimated and the true top-1 over the methods of the
  task (seeds averaged first): +1 = the estimate ranks the methods exactly as the labels do,
  which is what a user choosing a method without labels needs.

``labelless aggregate RUNS`` prints it for ``estimated_top1`` and a one-line summary of every
estimator that was recorded.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labelless.eval.aggregate import aggregate
from labelless.eval.results import load_results

__all__ = ["check_estimates", "estimate_markdown", "estimate_rows", "kendall_tau"]


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b of two equally long sequences (ties handled); None when undefined
    (fewer than 2 items, or one side constant)."""
    n = len(x)
    if n != len(y):
        raise ValueError(f"{n} values against {len(y)}")
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx = (x[i] > x[j]) - (x[i] < x[j])
            dy = (y[i] > y[j]) - (y[i] < y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif dx == dy:
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denom if denom > 0 else None


def _bench_names(results_path: Path) -> dict[str, Any]:
    """The run/data names a ``labelless bench`` experiment gave the run (``bench.json``)."""
    p = results_path.parent / "bench.json"
    try:
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def estimate_rows(runs_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """One row per run under ``runs_dir``: ``method`` (the bench run name, else the method and
    its zero-shot scorer), ``task`` (the bench data name, else the evaluated data spec, plus the
    backbone), ``seed``, ``top1``, ``est_top1`` and ``estimates`` (every recorded estimator)."""
    root = Path(runs_dir)
    rows = []
    for row in aggregate(root):
        path = root / row["path"]
        rec = load_results(path)
        bench = _bench_names(path)
        lf = rec.get("label_free") or {}
        method = bench.get("run")
        if method is None:
            scorer = (((rec.get("config") or {}).get("method")) or {}).get("scorer")
            method = f"{row['method']}:{scorer}" if row["method"] == "zeroshot" and scorer else row["method"]
        data = bench.get("data") or ((rec.get("data") or {}).get("spec")) or row["dataset"]
        task = f"{data} [{bench.get('model') or row['backbone']}]"
        rows.append({"method": method, "task": task, "seed": row["seed"], "top1": row["top1"],
                     "est_top1": row["est_top1"], "estimator": lf.get("estimator"),
                     "estimates": dict(lf.get("estimates") or {}), "path": row["path"]})
    return rows


def _value(row: dict[str, Any], estimator: str | None) -> float | None:
    v = row.get("est_top1") if estimator is None else (row.get("estimates") or {}).get(estimator)
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def check_estimates(rows: Sequence[dict[str, Any]], estimator: str | None = None) -> dict[str, Any]:
    """Error and rank agreement of an estimate against the true top-1.

    rows: :func:`estimate_rows`; estimator: None for ``est_top1`` (each run's chosen estimate),
    or the name of a recorded estimator. Runs without labels or without the estimate are left
    out. Returns ``{"per_method": {m: {"runs", "mae", "bias"}}, "per_task": {t: {"methods",
    "tau"}}, "overall": {"runs", "mae", "bias", "tasks", "tasks_with_tau", "tau_positive",
    "mean_tau"}}`` (errors in accuracy points).
    """
    pairs = [(r, _value(r, estimator)) for r in rows]
    pairs = [(r, v) for r, v in pairs if v is not None and r.get("top1") is not None]
    per_method: dict[str, dict[str, Any]] = {}
    for m in sorted({r["method"] for r, _ in pairs}):
        errs = [v - r["top1"] for r, v in pairs if r["method"] == m]
        per_method[m] = {"runs": len(errs), "mae": statistics.fmean(abs(e) for e in errs),
                         "bias": statistics.fmean(errs)}
    per_task: dict[str, dict[str, Any]] = {}
    for t in sorted({r["task"] for r, _ in pairs}):
        means: dict[str, tuple[list[float], list[float]]] = {}
        for r, v in pairs:
            if r["task"] == t:
                est, true = means.setdefault(r["method"], ([], []))
                est.append(v)
                true.append(r["top1"])
        methods = sorted(means)
        est = [statistics.fmean(means[m][0]) for m in methods]
        true = [statistics.fmean(means[m][1]) for m in methods]
        per_task[t] = {"methods": len(methods), "tau": kendall_tau(est, true)}
    errs = [v - r["top1"] for r, v in pairs]
    taus = [d["tau"] for d in per_task.values() if d["tau"] is not None]
    overall = {
        "runs": len(errs),
        "mae": statistics.fmean(abs(e) for e in errs) if errs else None,
        "bias": statistics.fmean(errs) if errs else None,
        "tasks": len(per_task),
        "tasks_with_tau": len(taus),
        "tau_positive": sum(t > 0 for t in taus),
        "mean_tau": statistics.fmean(taus) if taus else None,
    }
    return {"estimator": estimator or "estimated_top1", "per_method": per_method, "per_task": per_task,
            "overall": overall}


def _f(v: float | None, nd: int = 1) -> str:
    return "n/a" if v is None else f"{v:.{nd}f}"


def estimate_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown: the check of ``estimated_top1`` (per method, per task) and one summary line per
    recorded estimator."""
    check = check_estimates(rows)
    o = check["overall"]
    chosen = sorted({r["estimator"] for r in rows if r.get("estimator")})
    lines = [
        f"Label-free estimate of top-1 (`estimated_top1`, estimator: {', '.join(chosen) or 'n/a'}) "
        f"against the true top-1 over {o['runs']} runs: mean absolute error {_f(o['mae'])} points "
        f"(mean signed error {_f(o['bias'])}); Kendall tau over the methods of a task > 0 on "
        f"{o['tau_positive']} of {o['tasks_with_tau']} tasks (mean tau {_f(o['mean_tau'], 2)}).",
        "",
        "| method | runs | mean abs. error | mean signed error |",
        "|---|---:|---:|---:|",
    ]
    for m, d in check["per_method"].items():
        lines.append(f"| {m} | {d['runs']} | {_f(d['mae'])} | {_f(d['bias'])} |")
    lines += ["", "| task | methods | Kendall tau |", "|---|---:|---:|"]
    for t, d in check["per_task"].items():
        lines.append(f"| {t} | {d['methods']} | {_f(d['tau'], 2)} |")
    names = sorted({k for r in rows for k in (r.get("estimates") or {})})
    if names:
        lines += ["", "Every recorded estimator:", "",
                  "| estimator | runs | mean abs. error | mean signed error | tasks with tau > 0 | mean tau |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name in names:
            c = check_estimates(rows, name)["overall"]
            lines.append(f"| {name} | {c['runs']} | {_f(c['mae'])} | {_f(c['bias'])} | "
                         f"{c['tau_positive']} / {c['tasks_with_tau']} | {_f(c['mean_tau'], 2)} |")
    return "\n".join(lines) + "\n"
