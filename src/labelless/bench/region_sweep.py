"""The region-probe paper's Tables 1-3 as a sweep on cached frozen features.

:func:`region_sweep` runs the grid on given features; :func:`run_region_sweep` extracts the
features once per region source, sweeps and writes ``rows.json``/``rows.csv`` (the
``labelless region-sweep`` command); :func:`sweep_run_configs` is the same grid as one
``adapt`` run each (for an experiment file).
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from labelless.config import to_dict
from labelless.errors import ConfigError
from labelless.methods.base import Runtime
from labelless.methods.region_probe import (
    RegionFeatures,
    RegionProbeConfig,
    class_text_embeddings,
    extract_region_features,
    fit_probe,
    probe_logits,
)
from labelless.scoring.regions import TARGETED
from labelless.utils.io import atomic_save, atomic_write_json

TABLE1_STRATEGIES = ("region_text", "hard_margin", "soft_margin", "entropy")
TABLE3_STRATEGIES = ("soft_margin", "entropy")
TABLE3_KS = (2, 3, 4, 5, 6, 7, 0)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(-1) == labels).float().mean() * 100)


def region_sweep(
    train: dict[str, RegionFeatures],
    evals: dict[str, RegionFeatures],
    texts: torch.Tensor,
    base: RegionProbeConfig | None = None,
    labels: tuple[str, ...] = ("pseudo", "true"),
    tables: tuple[int, ...] = (1, 2, 3),
    ks: tuple[int, ...] = TABLE3_KS,
    seed: int = 0,
) -> list[dict]:
    """The grid of the paper's Tables 1-3 on cached features; one row per configuration.

    train / evals: ``{candidate: RegionFeatures}`` per region source (``crops``, ``sam``; the
    same source in both); texts ``(C, d)``; base: the shared config (tau, lam, k, head ...);
    labels: classifier protocols to run (``pseudo`` = label-free, ``true`` = paper; ``true`` is
    skipped when the training features have no labels). Rows: table, candidate, target,
    scoring, k, labels, protocol, acc (top-1 % on evals), zero-shot acc. Table 1: baselines
    + 4 strategies x {global, local} targets at ``base.k``; Table 2: the 4 strategies with
    the TRUE-label oracle target (compare with Table 1's rows: Delta_G, Delta_L); Table 3:
    soft margin / entropy x {global, local} x k in ``ks`` (0 = ALL).
    """
    base = base or RegionProbeConfig()
    rows: list[dict] = []
    done: dict[tuple, tuple[float, float]] = {}
    for cand, tr in train.items():
        ev = evals[cand]
        zs = accuracy(F.normalize(ev.global_embed, dim=-1) @ F.normalize(texts, dim=-1).t(), ev.labels)
        has_train_labels = bool((tr.labels >= 0).all())
        grid: list[tuple[int, str, str, int]] = []
        if 1 in tables:
            grid += [(1, "global_linear", "global", base.k), (1, "average", "global", base.k),
                     (1, "region_global", "global", base.k)]
            grid += [(1, s, t, base.k) for t in ("global", "local") for s in TABLE1_STRATEGIES]
        if 2 in tables and has_train_labels and bool((ev.labels >= 0).all()):
            grid += [(2, s, "true", base.k) for s in TABLE1_STRATEGIES]
        if 3 in tables:
            grid += [(3, s, t, k) for s in TABLE3_STRATEGIES for t in ("global", "local") for k in ks]
        for lab in labels:
            if lab == "true" and not has_train_labels:
                continue
            for table, scoring, target, k in grid:
                cfg = replace(base, regions=cand, scoring=scoring, target=target, k=k, labels=lab)
                key = (cand, scoring, target, k, lab)
                if key not in done:
                    t0 = time.time()
                    w, b, _, info = fit_probe(tr, texts, cfg, seed)
                    done[key] = (accuracy(probe_logits(ev, texts, cfg, w, b), ev.labels), time.time() - t0)
                acc, secs = done[key]
                rows.append({
                    "table": table, "candidate": cand, "target": target if scoring in TARGETED else "-",
                    "scoring": scoring, "k": k or "ALL", "labels": lab, "protocol": cfg.protocol,
                    "acc": round(acc, 2), "zeroshot_acc": round(zs, 2), "seconds": round(secs, 2),
                })
    return rows


def format_rows(rows: list[dict]) -> str:
    """A plain-text table of sweep rows."""
    cols = ["table", "candidate", "labels", "target", "scoring", "k", "acc", "zeroshot_acc"]
    lines = ["  ".join(f"{c:>13}" for c in cols)]
    lines += ["  ".join(f"{str(r[c]):>13}" for c in cols) for r in rows]
    return "\n".join(lines)


def run_region_sweep(
    model: str,
    data: str,
    eval_data: str,
    out: str | Path,
    texts: str = "templates:name=clip",
    classes: str | None = None,
    candidates: tuple[str, ...] = ("crops",),
    base: RegionProbeConfig | None = None,
    labels: tuple[str, ...] = ("pseudo", "true"),
    tables: tuple[int, ...] = (1, 2, 3),
    rt: Runtime | None = None,
) -> list[dict]:
    """Extract features once per candidate, run :func:`region_sweep`, write rows JSON/CSV."""
    from labelless.backbones import load_backbone
    from labelless.data.classes import parse_classes
    from labelless.data.features import default_cache_dir
    from labelless.runner import load_data
    from labelless.text import build_texts

    rt = rt or Runtime()
    if rt.cache_dir is None:
        rt.cache_dir = str(default_cache_dir())
    base = base or RegionProbeConfig()
    backbone = load_backbone(model, device=rt.device)
    train_ds = load_data(data, parse_classes(classes) if classes else None, rt)
    eval_ds = load_data(eval_data, list(train_ds.classnames), rt)
    if not eval_ds.has_labels:
        raise ConfigError(f"the sweep evaluates on '{eval_data}', which has no labels")
    tvec = class_text_embeddings(backbone, build_texts(texts, list(train_ds.classnames)), list(train_ds.classnames))
    tr, ev = {}, {}
    for cand in candidates:
        cfg = replace(base, regions=cand)
        tr[cand] = extract_region_features(backbone, train_ds, cfg, rt)
        ev[cand] = extract_region_features(backbone, eval_ds, cfg, rt)
    rows = region_sweep(tr, ev, tvec, base, labels=labels, tables=tables, seed=rt.seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "rows.json", {
        "model": model, "data": data, "eval_data": eval_data, "texts": texts,
        "base_config": to_dict(base), "rows": rows,
    })

    def write_csv(p: Path) -> None:
        with open(p, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)

    if rows:
        atomic_save(out / "rows.csv", write_csv)
    return rows


def sweep_run_configs(
    model: str, data: str, eval_data: str, texts: str = "templates:name=clip",
    candidates: tuple[str, ...] = ("crops", "sam"), tables: tuple[int, ...] = (1, 2, 3),
    labels: str = "pseudo",
) -> list[dict]:
    """The same grid as :func:`region_sweep`, as RunConfig-shaped dicts (one ``adapt`` each)."""
    runs = []
    grid: list[tuple[int, str, str, int]] = []
    if 1 in tables:
        grid += [(1, "global_linear", "global", 5), (1, "average", "global", 5), (1, "region_global", "global", 5)]
        grid += [(1, s, t, 5) for t in ("global", "local") for s in TABLE1_STRATEGIES]
    if 2 in tables:
        grid += [(2, s, "true", 5) for s in TABLE1_STRATEGIES]
    if 3 in tables:
        grid += [(3, s, t, k) for s in TABLE3_STRATEGIES for t in ("global", "local") for k in TABLE3_KS]
    seen = set()
    for cand in candidates:
        for _table, scoring, target, k in grid:
            params = {"regions": cand, "scoring": scoring, "target": target, "k": k, "labels": labels}
            key = json.dumps(params, sort_keys=True)
            if key in seen or (cand == "sam" and scoring == "global_linear"):
                continue
            seen.add(key)
            runs.append({"method": "region-probe", "model": model, "data": data, "eval_data": eval_data,
                         "texts": texts, "params": params})
    return runs


__all__ = [
    "TABLE1_STRATEGIES", "TABLE3_KS", "TABLE3_STRATEGIES", "accuracy", "format_rows",
    "region_sweep", "run_region_sweep", "sweep_run_configs",
]
