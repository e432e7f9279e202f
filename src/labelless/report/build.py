"""``labelless report``: one static HTML page about one or several runs.

:func:`build_report` reads each run folder's ``results.json`` and ``predictions.csv`` (never a
model), picks a bounded number of images per class (:mod:`labelless.report.runs`), writes their
thumbnails and the figures beside the page and renders ``report.html`` with jinja2. The page has
no script and no network reference: it opens from a ``file://`` URL, and the folder can be
copied or zipped as it is.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labelless.errors import LabellessError
from labelless.report import plots
from labelless.report.runs import (
    ReportRun,
    changed_flows,
    class_galleries,
    confused_pairs,
    load_run,
    run_names,
)
from labelless.report.thumbs import ThumbnailStore
from labelless.utils.io import atomic_write_text

__all__ = ["REPORT_FILENAME", "build_report", "default_report_dir"]

REPORT_FILENAME = "report.html"
_MISSING_LISTED = 100  # missing images named on the page (all are counted)


def default_report_dir(run_dirs: Sequence[str | Path]) -> Path:
    """``<run>/report`` for one run; ``<common parent>/report`` for several."""
    paths = [str(Path(p).resolve()) for p in run_dirs]
    if len(paths) == 1:
        return Path(paths[0]) / "report"
    return Path(os.path.commonpath(paths)) / "report"


def _fmt(v: Any, digits: int = 1, suffix: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}{suffix}"
    return f"{v}{suffix}"


def _tile(thumbs: ThumbnailStore, p, show_zeroshot: bool = False) -> dict[str, Any]:
    """What one thumbnail shows: image (or why it is missing), confidence, correctness."""
    t = thumbs.get(p.path)
    lines = [f"{p.confidence:.2f}"]
    if show_zeroshot and p.zeroshot is not None:
        lines.append(f"zero-shot {p.zeroshot_confidence:.2f}" if p.zeroshot_confidence is not None else "zero-shot")
    mark = None
    if p.label is not None:
        mark = "ok" if p.label == p.predicted else "bad"
        if mark == "bad":
            lines.append(f"true: {p.label}")
    return {"src": t.src, "missing": t.missing, "path": p.path, "name": Path(p.path).name,
            "lines": lines, "mark": mark, "predicted": p.predicted}


def _summary(run: ReportRun) -> dict[str, Any]:
    rec, lf = run.record, run.label_free
    m = rec.get("metrics") or {}
    backbone = rec.get("backbone") or {}
    data = rec.get("data") or {}
    git = (rec.get("provenance") or {}).get("git") or {}
    flips = lf.get("pseudo_label_flips") or []
    agree = lf.get("agreement") or {}
    pc = lf.get("predicted_classes") or {}
    conf = lf.get("confidence") or {}
    sha = (git.get("sha") or "")[:10]
    rows = [
        ("method", rec.get("method")),
        ("backbone", backbone.get("name") or backbone.get("spec")),
        ("data", data.get("spec") or data.get("name")),
        ("predicted images", f"{lf.get('n')} ({'evaluation set' if lf.get('predicted_on') == 'eval_data' else 'adaptation images'})"),
        ("seed", rec.get("seed")),
        ("top-1 (labels)", _fmt(m.get("top1"), 1, "%")),
        ("estimated top-1 (no labels)", _fmt(lf.get("estimated_top1"), 1, "%")),
        ("mean per class (labels)", _fmt(m.get("mean_per_class"), 1, "%")),
        ("changed vs zero-shot", _fmt(agree.get("changed"), 1, "%")),
        ("classes predicted", f"{pc.get('classes_used')} of {len(run.classnames)}"),
        ("class balance (entropy, 1 = even)", _fmt(pc.get("entropy"), 3)),
        ("largest / smallest class share", f"{_fmt(pc.get('max_share'), 1, '%')} / {_fmt(pc.get('min_share'), 1, '%')}"),
        ("mean confidence", _fmt(conf.get("mean"), 3)),
        ("pseudo-label flips, last epoch", _fmt(flips[-1].get("rate"), 1, "%") if flips else "–"),
        ("wall time", _fmt((rec.get("resources") or {}).get("wall_s"), 0, " s")),
        ("code", f"{sha}{' (dirty)' if git.get('dirty') else ''}" if sha else "–"),
    ]
    return {"rows": rows}


def _details(run: ReportRun) -> dict[str, str]:
    rec = run.record
    prov = dict(rec.get("provenance") or {})
    return {
        "config": json.dumps(rec.get("config") or {}, indent=2, sort_keys=True),
        "provenance": json.dumps({**prov, "resources": rec.get("resources")}, indent=2, sort_keys=True),
        "data": json.dumps({"data": rec.get("data"), "train_data": (rec.get("extra") or {}).get("train_data"),
                            "setting": (rec.get("extra") or {}).get("setting")}, indent=2, sort_keys=True),
    }


def _shared_reference(runs: Sequence[ReportRun]) -> tuple[ReportRun | None, list[str]]:
    """The zero-shot reference most runs share (runs with other class texts have another one):
    a run carrying it, and the names of the runs that share it."""
    groups: dict[tuple, list[ReportRun]] = {}
    for r in runs:
        zc = r.label_free.get("zeroshot_classes")
        if zc:
            groups.setdefault((tuple(r.classnames), tuple(zc["counts"])), []).append(r)
    if not groups:
        return None, []
    best = max(groups.values(), key=len)
    return best[0], [r.name for r in best]


def build_report(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path | None = None,
    per_class: int = 4,
    thumb_size: int = 112,
    title: str | None = None,
) -> Path:
    """Write ``report.html`` (+ ``thumbs/``, ``plots/``) for ``run_dirs``; return its path.

    per_class: most confident and borderline images shown per class and run (each); the other
    galleries (changes against zero-shot, confused pairs) show 6 pairs x 4 images per run.
    Raises :class:`~labelless.errors.LabellessError` naming the file when a run folder lacks its
    results or predictions or they are damaged. Images that cannot be read are shown as
    missing and listed.
    """
    import jinja2

    if not run_dirs:
        raise LabellessError("no run folder given")
    if per_class < 1:
        raise LabellessError(f"--per-class must be >= 1, got {per_class}")
    runs = [load_run(d) for d in run_dirs]
    for run, name in zip(runs, run_names([r.path for r in runs])):
        run.name = name
    out = Path(out_dir) if out_dir is not None else default_report_dir([r.path for r in runs])
    out.mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(exist_ok=True)
    thumbs = ThumbnailStore(out, size=thumb_size)

    classnames: list[str] = []
    for r in runs:
        classnames += [c for c in r.classnames if c not in classnames]
    path_sets = {frozenset(p.path for p in r.predictions) for r in runs}
    same_data = len(path_sets) == 1
    labelled = [r for r in runs if r.has_labels]
    notices: list[str] = []
    if len(runs) > 1 and not same_data:
        notices.append("The runs predicted on different images: galleries compare classes, not images.")
    if any(r.classnames != runs[0].classnames for r in runs):
        notices.append("The runs have different class lists; every class of any run is shown.")

    # -- figures ---------------------------------------------------------------------------
    figs: dict[str, str] = {}
    ref, ref_runs = _shared_reference(runs)
    same_classes = all(r.classnames == runs[0].classnames for r in runs)
    if same_classes:
        figs["shares"] = plots.plot_class_shares(
            {r.name: r.label_free["predicted_classes"]["counts"] for r in runs},
            ref.label_free["zeroshot_classes"]["counts"] if ref else None, runs[0].classnames,
            out / "plots" / "class_shares.png").relative_to(out).as_posix()
    figs["confidence"] = plots.plot_confidence(
        {r.name: r.label_free["confidence"]["histogram"] for r in runs},
        ref.label_free["zeroshot_confidence"]["histogram"] if ref else None,
        out / "plots" / "confidence.png").relative_to(out).as_posix()
    flips = {r.name: r.label_free["pseudo_label_flips"] for r in runs if r.label_free.get("pseudo_label_flips")}
    if flips:
        figs["flips"] = plots.plot_flips(flips, out / "plots" / "flips.png").relative_to(out).as_posix()
    figs["estimate"] = plots.plot_accuracy_vs_estimate(
        [(r.name, (r.metrics or {}).get("top1"), r.label_free.get("estimated_top1")) for r in runs],
        out / "plots" / "estimate.png").relative_to(out).as_posix()
    if labelled and same_classes:
        figs["per_class"] = plots.plot_per_class(
            {r.name: (r.metrics or {}).get("per_class") or {} for r in labelled}, runs[0].classnames,
            out / "plots" / "per_class.png").relative_to(out).as_posix()

    # -- per-run content -------------------------------------------------------------------
    from labelless.eval.plots import plot_confusion

    views = []
    galleries = {}
    for k, r in enumerate(runs):
        galleries[r.name] = class_galleries(r.predictions, classnames, per_class)
        flows = changed_flows(r.predictions)
        view = {
            "name": r.name, "path": str(r.path), "summary": _summary(r), "details": _details(r),
            "estimates": r.label_free.get("estimates") or {}, "estimator": r.label_free.get("estimator"),
            "top1": (r.metrics or {}).get("top1"),
            "flow": (r.label_free.get("agreement") or {}).get("flow", [])[:8],
            "changed": [{**f, "tiles": [_tile(thumbs, p, show_zeroshot=True) for p in f["examples"]]} for f in flows],
            "confused": [], "confusion": None, "has_labels": r.has_labels,
        }
        if r.has_labels:
            view["confused"] = [{**f, "tiles": [_tile(thumbs, p) for p in f["examples"]]}
                                for f in confused_pairs(r.predictions)]
            cm = (r.metrics or {}).get("confusion")
            if cm:
                view["confusion"] = plot_confusion(
                    cm, r.classnames, out / "plots" / f"confusion-{k}.png",
                    title=f"{r.name}: confusion (row-normalised)").relative_to(out).as_posix()
        views.append(view)

    counts = {r.name: Counter(p.predicted for p in r.predictions) for r in runs}
    classes = []
    for c in classnames:
        rows = []
        for r in runs:
            g = galleries[r.name][c]
            count = counts[r.name][c] if c in r.classnames else None
            rows.append({
                "run": r.name, "count": count,
                "confident": [_tile(thumbs, p) for p in g["confident"]],
                "borderline": [_tile(thumbs, p) for p in g["borderline"]],
            })
        classes.append({"name": c, "anchor": f"class-{classnames.index(c)}", "runs": rows})

    missing = thumbs.missing
    if missing:
        notices.append(f"{len(missing)} of the images shown could not be read (moved, deleted or "
                       "damaged since the run); they appear as grey boxes and are listed at the end.")
    first = runs[0].record
    data_name = ((first.get("data") or {}).get("name")) or "data"
    if title is None:
        if len(runs) == 1:
            title = f"labelless report: {runs[0].name} ({first.get('method')} on {data_name})"
        else:
            title = f"labelless report: {len(runs)} runs on {data_name}" if same_data else f"labelless report: {len(runs)} runs"
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("labelless.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    )
    ref_note = ""
    if ref is not None and len(ref_runs) < len(runs):
        ref_note = f"the zero-shot reference of {', '.join(ref_runs)} (the other runs use other class texts)"
    html = env.get_template("report.html.j2").render(
        title=title, runs=views, ref_note=ref_note, classes=classes, figs=figs, notices=notices,
        missing=missing[:_MISSING_LISTED], n_missing=len(missing), per_class=per_class,
        any_labels=bool(labelled), multi=len(runs) > 1, fmt=_fmt,
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    return atomic_write_text(out / REPORT_FILENAME, html)
