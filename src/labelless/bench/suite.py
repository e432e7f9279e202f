"""Summaries of an experiment over a suite of tasks: gain over a baseline run, per method.

An experiment file with ``baseline: RUN`` (e.g. the zero-shot run) gets, besides the per-run
tables, ``suite.md`` and ``suite.png``: per run, the mean top-1 over the tasks (data entries)
± its standard deviation over tasks, the mean gain over the baseline on the same task ± std,
and on how many tasks the run beats the baseline (by > 0 and by >= ``margin`` points). Seeds of
the same run and task are averaged first. This is how testbed claims are stated: a method's
default must hold on tasks nobody tuned on (``experiments/README.md``).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

MARGIN = 3.0


def _sd(vals: list[float]) -> float:
    return statistics.stdev(vals) if len(vals) > 1 else 0.0


@dataclass
class SuiteSummary:
    """What ``suite.md`` shows. ``rows``: one dict per (run, model) with run, model, tasks,
    top1 / top1_sd (mean / std over tasks), gain / gain_sd, won (tasks with gain > 0),
    won_margin (gain >= margin), seeds (fewest seeds of any task). ``gains``: per (run, model)
    ``{task: gain}``; ``base``: per (task, model) the baseline's top-1."""

    baseline: str
    margin: float = MARGIN
    rows: list[dict] = field(default_factory=list)
    gains: dict = field(default_factory=dict)
    base: dict = field(default_factory=dict)


def summarize_suite(rows: list[dict], baseline: str, margin: float = MARGIN) -> SuiteSummary:
    """Suite summary of :func:`labelless.bench.harness.collect_rows` rows."""
    per: dict[tuple[str, str, str], list[float]] = {}
    for r in rows:
        if r.get("top1") is not None:
            per.setdefault((r["run"], r["data"], r["model"]), []).append(float(r["top1"]))
    mean = {k: statistics.fmean(v) for k, v in per.items()}
    out = SuiteSummary(baseline, margin)
    out.base = {(d, m): v for (run, d, m), v in mean.items() if run == baseline}
    keys = sorted({(run, m) for run, _, m in mean}, key=lambda x: (x[1], x[0] != baseline, x[0]))
    for run, model in keys:
        tasks = sorted(d for (r, d, m) in mean if r == run and m == model and (d, m) in out.base)
        if not tasks:
            continue
        top = [mean[(run, d, model)] for d in tasks]
        gain = [mean[(run, d, model)] - out.base[(d, model)] for d in tasks]
        out.gains[(run, model)] = dict(zip(tasks, gain))
        out.rows.append({
            "run": run, "model": model, "tasks": len(tasks),
            "top1": statistics.fmean(top), "top1_sd": _sd(top),
            "gain": statistics.fmean(gain), "gain_sd": _sd(gain),
            "won": sum(g > 0 for g in gain), "won_margin": sum(g >= margin for g in gain),
            "seeds": min(len(per[(run, d, model)]) for d in tasks),
        })
    return out


def suite_markdown(s: SuiteSummary) -> str:
    """The two tables of ``suite.md``: per run over tasks, then per task."""
    b, m = s.baseline, s.margin
    lines = [f"Gain over `{b}` on the same task (top-1 points; seeds averaged per task, then "
             "mean ± std over tasks).", "",
             f"| run | model | tasks | top-1 | gain | tasks won (> 0) | tasks with gain >= {m:g} | seeds |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in s.rows:
        is_base = r["run"] == b
        gain = "" if is_base else f"{r['gain']:+.1f} ± {r['gain_sd']:.1f}"
        won = "" if is_base else f"{r['won']}/{r['tasks']}"
        wm = "" if is_base else f"{r['won_margin']}/{r['tasks']}"
        lines.append(f"| {r['run']} | {r['model']} | {r['tasks']} | {r['top1']:.1f} ± "
                     f"{r['top1_sd']:.1f} | {gain} | {won} | {wm} | {r['seeds']} |")
    models = sorted({mod for _, mod in s.base})
    for model in models:
        runs = [run for run, mod in s.gains if mod == model and run != b]
        tasks = sorted(t for t, mod in s.base if mod == model)
        lines += ["", f"Per task ({model}): `{b}` top-1, then each run's gain over it.", "",
                  "| task | " + " | ".join([f"{b} top-1"] + runs) + " |",
                  "|---|" + "---:|" * (1 + len(runs))]
        for t in tasks:
            cells = [f"{g:+.1f}" if (g := s.gains[(run, model)].get(t)) is not None else ""
                     for run in runs]
            lines.append(f"| {t} | {s.base[(t, model)]:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_suite_summary(rows: list[dict], baseline: str, exp_dir: str | Path, out=print) -> dict[str, Path]:
    """Write ``suite.md`` and ``suite.png`` (gain per task and run) under ``exp_dir``."""
    from labelless.eval import plot_bars
    from labelless.utils.io import atomic_write_text

    exp_dir = Path(exp_dir)
    s = summarize_suite(rows, baseline)
    if not s.rows:
        out(f"suite summary: no task has both '{baseline}' and another run yet")
        return {}
    md = suite_markdown(s)
    files = {"suite": atomic_write_text(exp_dir / "suite.md", md)}
    out("\n" + md)
    models = {mod for _, mod in s.gains}
    bars = {(run if len(models) == 1 else f"{run} [{mod}]"): g
            for (run, mod), g in s.gains.items() if run != baseline}
    if bars:
        files["suite_png"] = plot_bars(bars, exp_dir / "suite.png",
                                       title=f"{exp_dir.name}: gain over {baseline} per task",
                                       ylabel="top-1 gain (points)")
    return files


__all__ = ["MARGIN", "SuiteSummary", "suite_markdown", "summarize_suite", "write_suite_summary"]
