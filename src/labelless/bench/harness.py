"""``labelless bench``: run methods x data sets x backbones x seeds from an experiment file.

An experiment is a YAML file that is a small diff from the defaults of
:class:`labelless.runner.RunConfig`::

    name: testbed-main                # the folder under the runs directory (default: file stem)
    description: ...
    extends: base.yaml                # optional: inherit another file's defaults and grid axes
    defaults:                         # RunConfig fields shared by every run
      model: testbed
      label_texts: templates:name=clip
      params: {}                      # method settings shared by every run
      runtime: {batch_size: 64}       # Runtime fields (command-line flags override them)
    grid:
      runs:                           # or `method: [zeroshot, fair]` (run name = method)
        - {name: zs-names, method: zeroshot, params: {scorer: clip}}
        - {name: cupl, method: zeroshot, params: {scorer: cupl}, datasets: [eurosat]}
      data:                           # RunConfig data fields per data set
        - {name: eurosat, data: "eurosat:root=D,split=train", eval_data: "eurosat:root=D,split=test",
           texts: "descriptions:path=cupl.json", method_params: {fair: {optim: {lr: 1e-6}}}}
      model: [openclip:ViT-B-32:openai]   # strings, or {name: short, model: spec}
      seed: [0, 1, 2]

Precedence: ``defaults`` < the data entry < the run entry for RunConfig fields; for ``params``
``defaults.params`` < ``run.params`` < ``data.method_params[<run name> or <method>]`` (deep
merge). Every concrete run gets the folder ``<runs>/<experiment>/<run>/<data>/<model>/s<seed>/``
(deterministic from the file). Existing experiments are never edited: each run folder keeps a
``bench.json`` with the hash of the run's identity (all RunConfig fields except ``out`` and
``runtime``); a finished run with the same hash is skipped, and a different hash is refused.
"""

from __future__ import annotations

import fnmatch
import math
import statistics
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labelless.bench.reference import family_of
from labelless.config import deep_merge
from labelless.errors import ConfigError, LabellessError, did_you_mean
from labelless.utils.io import atomic_write_json, stable_hash
from labelless.utils.paths import slug

__all__ = [
    "BENCH_FILENAME",
    "BenchReport",
    "Experiment",
    "PlannedRun",
    "collect_rows",
    "expand",
    "format_plan",
    "load_experiment",
    "run_experiment",
    "summarize",
]

BENCH_FILENAME = "bench.json"
CHECKPOINT_FILENAME = "checkpoint.pt"  # written by labelless.engine.TrainLoop

# RunConfig fields that define what a run computes (hashed); `out` and `runtime` do not.
IDENTITY_FIELDS = ("method", "model", "data", "eval_data", "classes", "texts", "label_texts",
                   "seed", "monitor", "params")
_TOP_KEYS = {"name", "description", "extends", "defaults", "grid", "runs", "baseline"}
_GRID_KEYS = {"method", "runs", "data", "model", "seed"}
_DEFAULT_KEYS = {"model", "data", "eval_data", "classes", "texts", "label_texts", "monitor",
                 "params", "runtime", "seed"}
_DATA_KEYS = {"name", "data", "eval_data", "classes", "texts", "label_texts", "method_params"}
_RUN_KEYS = {"name", "method", "params", "texts", "label_texts", "eval_data", "classes",
             "monitor", "datasets", "note"}


def _slug(text: str) -> str:
    return slug(text, keep_plus=True, max_len=80, fallback="x")  # experiment folders keep '+'


def _check_keys(d: Any, allowed: set[str], where: str) -> dict:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {d!r}")
    for k in d:
        if k not in allowed:
            raise ConfigError(
                f"{where}: unknown key '{k}'.{did_you_mean(str(k), allowed)} "
                f"Valid keys: {', '.join(sorted(allowed))}"
            )
    return d


@dataclass
class Experiment:
    """A parsed experiment file (see the module docstring for the format)."""

    name: str
    path: Path
    description: str = ""
    defaults: dict = field(default_factory=dict)
    runs: list[dict] = field(default_factory=list)
    data: list[dict] = field(default_factory=list)
    models: list[dict] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])
    baseline: str | None = None
    """A run name: when set, the summary adds the gain of every run over it per task
    (``suite.md``, :mod:`labelless.bench.suite`)."""


@dataclass
class PlannedRun:
    """One concrete run of an experiment.

    status: ``todo`` (will run), ``done`` (results with the same hash: skipped), ``resume``
    (checkpoint without results), ``edited`` (stored hash differs: refused), ``unavailable``
    (method not registered or its params invalid; ``problem`` says why).
    """

    experiment: str
    run: str
    data: str
    model: str
    seed: int
    config: Any  # labelless.runner.RunConfig
    identity: dict
    hash: str
    out_dir: Path
    status: str = "todo"
    problem: str = ""

    @property
    def id(self) -> str:
        return f"{self.run}/{self.data}/{self.model}/s{self.seed}"


def _read_yaml(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise ConfigError(f"experiment file '{path}' does not exist")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"experiment file '{path}' is not valid YAML: {e}") from None
    return _check_keys(raw, _TOP_KEYS, str(path))


def load_experiment(path: str | Path) -> Experiment:
    """Parse and validate an experiment YAML (with its ``extends`` chain)."""
    path = Path(path)
    raw = _read_yaml(path)
    defaults = _check_keys(raw.get("defaults") or {}, _DEFAULT_KEYS, f"{path}: defaults")
    grid = _check_keys(raw.get("grid") or {}, _GRID_KEYS, f"{path}: grid")
    if raw.get("extends"):
        base_path = (path.parent / str(raw["extends"])).resolve()
        if base_path == path.resolve():
            raise ConfigError(f"{path}: extends itself")
        base = load_experiment(base_path)
        defaults = deep_merge(base.defaults, defaults)
        grid = {"data": base.data, "model": base.models, "seed": base.seeds, **grid}
    runs_spec = grid.get("runs", raw.get("runs"))
    if runs_spec is not None and grid.get("method") is not None:
        raise ConfigError(f"{path}: give either grid.method or grid.runs, not both")
    if runs_spec is None:
        methods = grid.get("method")
        if methods is None:
            raise ConfigError(f"{path}: no runs: add grid.method: [zeroshot, ...] or grid.runs: [...]")
        runs_spec = [{"name": m, "method": m} for m in (methods if isinstance(methods, list) else [methods])]
    runs = []
    for i, r in enumerate(runs_spec):
        if isinstance(r, str):
            r = {"name": r, "method": r}
        r = dict(_check_keys(r, _RUN_KEYS, f"{path}: runs[{i}]"))
        if not r.get("method"):
            raise ConfigError(f"{path}: runs[{i}] has no method")
        r.setdefault("name", r["method"])
        runs.append(r)
    data_spec = grid.get("data")
    if data_spec is None:
        if not defaults.get("data"):
            raise ConfigError(f"{path}: no data: add grid.data: [{{name, data, eval_data, texts}}] or defaults.data")
        data_spec = [{"name": _slug(str(defaults["data"]).split(":", 1)[0]), "data": defaults["data"]}]
    data = []
    for i, d in enumerate(data_spec if isinstance(data_spec, list) else [data_spec]):
        if isinstance(d, str):
            d = {"name": _slug(d.split(":", 1)[0]), "data": d}
        d = dict(_check_keys(d, _DATA_KEYS, f"{path}: grid.data[{i}]"))
        if "name" not in d:
            if not d.get("data"):
                raise ConfigError(f"{path}: grid.data[{i}] needs a name or a data spec")
            d["name"] = _slug(str(d["data"]).split(":", 1)[0])
        data.append(d)
    model_spec = grid.get("model", defaults.get("model"))
    if not model_spec:
        raise ConfigError(f"{path}: no backbone: set defaults.model or grid.model")
    models = []
    for m in model_spec if isinstance(model_spec, list) else [model_spec]:
        if isinstance(m, str):
            m = {"name": _slug(m), "model": m}
        m = dict(_check_keys(m, {"name", "model"}, f"{path}: grid.model"))
        if not m.get("model"):
            raise ConfigError(f"{path}: grid.model entry {m} has no model spec")
        m.setdefault("name", _slug(m["model"]))
        models.append(m)
    seeds = grid.get("seed", defaults.get("seed", [0]))
    seeds = seeds if isinstance(seeds, list) else [seeds]
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{path}: seeds must be a non-empty list of integers, got {seeds!r}")
    for what, items in (("run", runs), ("data", data), ("model", models)):
        names = [_slug(x["name"]) for x in items]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"{path}: {what} names must be unique (as folder names): {', '.join(dup)}")
    known = {d["name"] for d in data}
    for r in runs:
        for name in r.get("datasets") or []:
            if name not in known:
                raise ConfigError(f"{path}: run '{r['name']}' lists unknown data set '{name}'.{did_you_mean(name, known)}")
    name = str(raw.get("name") or path.stem)
    baseline = raw.get("baseline")
    if baseline is not None and baseline not in {r["name"] for r in runs}:
        raise ConfigError(f"{path}: baseline '{baseline}' is not a run name."
                          f"{did_you_mean(str(baseline), [r['name'] for r in runs])}")
    return Experiment(name=name, path=path, description=str(raw.get("description") or ""),
                      defaults=defaults, runs=runs, data=data, models=models, seeds=list(seeds),
                      baseline=baseline)


def _runtime(base: dict, overrides: dict | None, seed: int):
    from labelless.config import from_dict
    from labelless.methods.base import Runtime

    rt = from_dict(Runtime, {**(base or {}), **{k: v for k, v in (overrides or {}).items() if v is not None}},
                   where="runtime")
    rt.seed = seed
    if rt.cache_dir is None:  # runs of one experiment share frozen features (keys include the seed)
        from labelless.data.features import default_cache_dir

        rt.cache_dir = str(default_cache_dir())
    return rt


def expand(exp: Experiment, runs_dir: str | Path = "runs", runtime: dict | None = None) -> list[PlannedRun]:
    """Every concrete run of ``exp`` (runs x data x models x seeds), in a deterministic order.

    ``runtime``: Runtime fields from the command line; they override ``defaults.runtime``.
    Statuses are filled by :func:`check_status`.
    """
    from labelless.runner import RunConfig

    root = Path(runs_dir) / _slug(exp.name)
    planned: list[PlannedRun] = []
    for r in exp.runs:
        for d in exp.data:
            if r.get("datasets") and d["name"] not in r["datasets"]:
                continue
            for m in exp.models:
                for seed in exp.seeds:
                    fields: dict[str, Any] = {k: v for k, v in exp.defaults.items()
                                              if k not in ("params", "runtime", "seed")}
                    fields.update({k: v for k, v in d.items() if k not in ("name", "method_params")})
                    fields.update({k: v for k, v in r.items()
                                   if k not in ("name", "params", "datasets", "note")})
                    params = deep_merge(exp.defaults.get("params") or {}, r.get("params") or {})
                    mp = d.get("method_params") or {}
                    for key in (r["method"], r["name"]):  # the run name wins over the method name
                        params = deep_merge(params, mp.get(key) or {})
                    fields.update(model=m["model"], seed=seed, params=params)
                    out = root / _slug(r["name"]) / _slug(d["name"]) / _slug(m["name"]) / f"s{seed}"
                    try:
                        cfg = RunConfig(**fields, out=str(out),
                                        runtime=_runtime(exp.defaults.get("runtime") or {}, runtime, seed))
                    except TypeError as e:
                        raise ConfigError(f"{exp.path}: run '{r['name']}' on '{d['name']}': {e}") from None
                    identity = {k: getattr(cfg, k) for k in IDENTITY_FIELDS}
                    planned.append(PlannedRun(
                        experiment=exp.name, run=r["name"], data=d["name"], model=m["name"], seed=seed,
                        config=cfg, identity=identity, hash=stable_hash(identity), out_dir=out,
                    ))
    return planned


def _stored_hash(out_dir: Path) -> str | None:
    import json

    p = out_dir / BENCH_FILENAME
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8")).get("hash")
    except (OSError, ValueError):
        return None


def full_params(method: str, params: dict) -> dict:
    """``params`` deep-merged onto the method's default config (all fields).

    ``labelless.config.from_dict`` builds a nested dataclass from its class defaults, so a
    partial ``optim: {lr: 1e-6}`` would silently drop a method's own optimiser defaults (e.g.
    FAIR's ``min_lr``, LaTTe-CLIP's lr and weight decay); merging onto the method's defaults
    first keeps them.
    """
    from labelless.config import to_dict
    from labelless.registry import METHODS

    try:
        defaults = to_dict(METHODS.get(method).Config())
    except Exception:  # a Config without full defaults: leave the params as given
        return params
    return deep_merge(defaults, params or {})


def check_status(planned: list[PlannedRun]) -> list[PlannedRun]:
    """Fill each run's ``status`` from its folder and the method registry (in place); for
    runnable runs, complete ``config.params`` with the method's defaults (:func:`full_params`)."""
    from labelless.registry import METHODS
    from labelless.runner import method_config

    for p in planned:
        stored = _stored_hash(p.out_dir)
        has_results = (p.out_dir / "results.json").is_file()
        if stored is not None and stored != p.hash:
            p.status = "edited"
            p.problem = f"{p.out_dir / BENCH_FILENAME} holds hash {stored}, the experiment now gives {p.hash}"
        elif has_results and stored is None:
            p.status = "edited"
            p.problem = f"{p.out_dir} holds results not written by this experiment (no {BENCH_FILENAME})"
        elif has_results:
            p.status = "done"
        elif p.config.method not in METHODS:
            p.status = "unavailable"
            p.problem = f"method '{p.config.method}' is not registered (labelless list methods)"
        else:
            try:
                method_config(p.config.method, p.config.params)
                p.config.params = full_params(p.config.method, p.identity["params"])
                method_config(p.config.method, p.config.params)
            except LabellessError as e:
                p.status, p.problem = "unavailable", f"params: {e}"
            else:
                p.status = "resume" if (p.out_dir / CHECKPOINT_FILENAME).is_file() else "todo"
    return planned


def _matches(p: PlannedRun, only: list[str] | None) -> bool:
    if not only:
        return True
    for pat in only:
        if any(c in pat for c in "*?["):
            if fnmatch.fnmatchcase(p.id, pat):
                return True
        elif pat.lower() in p.id.lower():
            return True
    return False


def format_plan(planned: list[PlannedRun]) -> str:
    """A plain-text plan: one line per run with its status and folder, then the counts."""
    width = max((len(p.id) for p in planned), default=10)
    lines = [f"{'run':<{width}}  {'status':<11}  folder"]
    for p in planned:
        extra = f"  ({p.problem})" if p.problem else ""
        lines.append(f"{p.id:<{width}}  {p.status:<11}  {p.out_dir}{extra}")
    counts: dict[str, int] = {}
    for p in planned:
        counts[p.status] = counts.get(p.status, 0) + 1
    lines.append(f"{len(planned)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return "\n".join(lines)


@dataclass
class BenchReport:
    """What :func:`run_experiment` did."""

    experiment: Experiment
    planned: list[PlannedRun]
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    rows: list[dict] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    comparison: list[dict] = field(default_factory=list)


def run_experiment(
    path: str | Path,
    runs_dir: str | Path = "runs",
    dry_run: bool = False,
    only: list[str] | None = None,
    resume: bool = False,
    runtime: dict | None = None,
    aggregate: bool = True,
    out=print,
) -> BenchReport:
    """Plan, run (skipping finished runs), aggregate, plot and compare with the papers.

    Raises :class:`~labelless.errors.LabellessError` before running anything when a run folder
    was made by a different version of the experiment, or when a selected run's method is not
    registered; after running, when some runs failed (the others are kept and aggregated).
    """
    from labelless.runner import run as run_one

    exp = load_experiment(path)
    planned = check_status(expand(exp, runs_dir, runtime))
    selected = [p for p in planned if _matches(p, only)]
    if only and not selected:
        raise LabellessError(f"--only {' '.join(only)} matches none of the {len(planned)} runs of '{exp.name}'")
    report = BenchReport(exp, selected)
    if dry_run:
        out(f"experiment '{exp.name}' ({exp.path}): {exp.description}".rstrip(": "))
        out(format_plan(selected))
        return report
    edited = [p for p in selected if p.status == "edited"]
    if edited:
        raise LabellessError(
            f"experiment '{exp.name}' was changed after these runs were made:\n  "
            + "\n  ".join(f"{p.id}: {p.problem}" for p in edited)
            + "\nExisting experiments are never edited: copy the file under a new `name:` for the "
            "new settings (or delete those run folders if you mean to discard them)."
        )
    unavailable = [p for p in selected if p.status == "unavailable"]
    if unavailable:
        raise LabellessError(
            "cannot run:\n  " + "\n  ".join(f"{p.id}: {p.problem}" for p in unavailable)
            + "\nUse --only to select the runs that can run, or --dry-run to see the plan."
        )
    todo = [p for p in selected if p.status in ("todo", "resume")]
    out(f"experiment '{exp.name}': {len(selected)} runs, {len(selected) - len(todo)} already done")
    for i, p in enumerate(selected, 1):
        if p.status == "done":
            report.skipped.append(p.id)
            continue
        if p.status == "resume" and not resume:
            report.failed[p.id] = (f"{p.out_dir} holds a checkpoint of an interrupted run: pass --resume "
                                   "to continue it (or delete the folder)")
            out(f"[{i}/{len(selected)}] {p.id}: skipped, {report.failed[p.id]}")
            continue
        out(f"[{i}/{len(selected)}] {p.id} -> {p.out_dir}")
        p.out_dir.mkdir(parents=True, exist_ok=True)
        from labelless.config import to_dict

        atomic_write_json(p.out_dir / BENCH_FILENAME, {
            "experiment": exp.name, "experiment_file": str(exp.path), "run": p.run, "data": p.data,
            "model": p.model, "seed": p.seed, "hash": p.hash, "identity": to_dict(p.identity),
        })
        try:
            run_one(p.config, resume=resume and p.status == "resume")
        except KeyboardInterrupt:
            raise
        except Exception as e:  # one failed run must not lose the others
            msg = str(e) if isinstance(e, LabellessError) else f"{type(e).__name__}: {e}"
            if not isinstance(e, LabellessError):
                traceback.print_exc(file=sys.stderr)
            report.failed[p.id] = msg
            out(f"  failed: {msg}")
            continue
        report.ran.append(p.id)
    exp_dir = Path(runs_dir) / _slug(exp.name)
    if aggregate and exp_dir.is_dir():
        summarize(exp_dir, report, out=out)
        if exp.baseline and report.rows:
            from labelless.bench.suite import write_suite_summary

            report.files.update(write_suite_summary(report.rows, exp.baseline, exp_dir, out=out))
    if report.failed:
        raise LabellessError(
            f"{len(report.failed)} run(s) of '{exp.name}' did not finish:\n  "
            + "\n  ".join(f"{k}: {v}" for k, v in report.failed.items())
        )
    return report


# -- aggregation ---------------------------------------------------------------------------------

def collect_rows(exp_dir: str | Path) -> list[dict]:
    """One row per ``results.json`` under ``exp_dir``: :func:`labelless.eval.aggregate`'s
    columns plus ``run``, ``data``, ``model`` (the experiment's names), ``family``,
    ``backbone_spec``, ``backbone_key``, ``setting``, ``method_config`` and ``history``."""
    import json

    from labelless.bench.reference import backbone_key
    from labelless.eval import aggregate, load_results

    exp_dir = Path(exp_dir)
    rows = aggregate(exp_dir)
    for row in rows:
        path = exp_dir / row["path"]
        rec = load_results(path)
        bench: dict = {}
        if (path.parent / BENCH_FILENAME).is_file():
            bench = json.loads((path.parent / BENCH_FILENAME).read_text(encoding="utf-8"))
        parts = Path(row["path"]).parts
        guess = dict(zip(("run", "data", "model"), parts[:3])) if len(parts) >= 5 else {}
        mcfg = ((rec.get("config") or {}).get("method")) or {}
        spec = (rec.get("backbone") or {}).get("spec") or ""
        extra = rec.get("extra") or {}
        row.update(
            run=bench.get("run", guess.get("run", row["method"])),
            data=bench.get("data", guess.get("data", row["dataset"])),
            model=bench.get("model", guess.get("model", row["backbone"])),
            family=family_of(row["method"], mcfg),
            backbone_spec=spec,
            backbone_key=backbone_key(spec),
            setting=extra.get("setting"),
            method_config=mcfg,
            history=extra.get("history") or [],
        )
    return rows


_CSV_EXTRA = ("run", "data", "model", "family", "backbone_spec", "setting")


def _write_csv(rows: list[dict], path: Path) -> Path:
    import csv
    import io

    from labelless.eval.aggregate import COLUMNS
    from labelless.utils.io import atomic_write_text

    cols = list(_CSV_EXTRA) + [c for c in COLUMNS if c not in _CSV_EXTRA]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r.get(k) for k in cols})
    return atomic_write_text(path, buf.getvalue())


def _mean(vals) -> float | None:
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    return statistics.fmean(vals) if vals else None


def history_curves(rows: list[dict]) -> dict[tuple[str, str], dict[str, list[float | None]]]:
    """Per (data, model): ``{"<run> <key>": [seed-mean per epoch]}`` for every history key that
    contains ``acc`` (pseudo-label accuracy, monitoring accuracy ...)."""
    groups: dict[tuple[str, str, str], list[list[dict]]] = {}
    for r in rows:
        if r.get("history"):
            groups.setdefault((r["data"], r["model"], r["run"]), []).append(r["history"])
    curves: dict[tuple[str, str], dict[str, list[float | None]]] = {}
    for (data, model, run), hists in sorted(groups.items()):
        keys: list[str] = []
        for h in hists:
            for row in h:
                keys += [k for k in row if "acc" in k.lower() and k not in keys]
        for key in keys:
            n = max(len(h) for h in hists)
            series = []
            for e in range(n):
                vals = []
                for h in hists:
                    v = h[e].get(key) if e < len(h) else None
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        vals.append(float(v))
                series.append(_mean(vals))
            curves.setdefault((data, model), {})[f"{run} {key}"] = series
    return curves


def summarize(exp_dir: str | Path, report: BenchReport | None = None, out=print) -> dict[str, Path]:
    """Tables (CSV, Markdown), plots and the comparison with the papers for one experiment."""
    from labelless.bench.reference import compare, comparison_markdown
    from labelless.eval import markdown_table, plot_bars, plot_curves
    from labelless.utils.io import atomic_write_text

    exp_dir = Path(exp_dir)
    rows = collect_rows(exp_dir)
    files: dict[str, Path] = {}
    if not rows:
        out(f"no results under {exp_dir} yet")
        return files
    files["csv"] = _write_csv(rows, exp_dir / "results.csv")
    md = markdown_table(rows, group_by=("run", "data", "model", "split"))
    files["md"] = atomic_write_text(exp_dir / "results.md", md)
    out("\n" + md)
    models = sorted({r["model"] for r in rows})
    bars: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        if r.get("top1") is None:
            continue
        label = r["run"] if len(models) == 1 else f"{r['run']} [{r['model']}]"
        bars.setdefault(label, {}).setdefault(r["data"], []).append(r["top1"])
    if bars:
        files["bars"] = plot_bars({m: {d: _mean(v) for d, v in ds.items()} for m, ds in bars.items()},
                                  exp_dir / "results.png", title=f"{exp_dir.name}: top-1 accuracy")
    for (data, model), series in history_curves(rows).items():
        key = f"curves-{_slug(data)}-{_slug(model)}"
        files[key] = plot_curves(series, exp_dir / f"{key}.png", title=f"{data} / {model}: accuracy per epoch",
                                 ylabel="accuracy (%)")
    comparison = compare(rows)
    if comparison:
        cmp_md = comparison_markdown(comparison)
        files["comparison"] = atomic_write_text(exp_dir / "comparison.md", cmp_md)
        out("\nOurs vs the papers:\n" + cmp_md)
    if any(r.get("top1") is not None and r.get("est_top1") is not None for r in rows):
        from labelless.eval.estimate_check import estimate_markdown, estimate_rows

        est_md = estimate_markdown(estimate_rows(exp_dir))  # the label-free estimate vs the labels
        files["estimate"] = atomic_write_text(exp_dir / "estimate.md", est_md)
        out("\nLabel-free accuracy estimate vs labels:\n" + est_md)
    out("wrote " + ", ".join(str(p) for p in files.values()))
    if report is not None:
        report.rows, report.files, report.comparison = rows, files, comparison
    return files
