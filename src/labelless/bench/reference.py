"""The published numbers of the four papers, and the "ours vs paper" comparison.

``reference/<paper>.json`` holds ``{"paper", "title", "citation", "text", "notes": [...],
"entries": [...]}``; every entry is one printed number:

    paper, table, method (the row as printed), family (our method family it corresponds to, or
    null for methods labelless does not implement), dataset (our benchmark registry name, or
    "average" for the paper's mean column), column (as printed), backbone (as stated),
    backbone_key (normalised ARCH/WEIGHTS, see :func:`backbone_key`), metric ("top1", in %),
    value, setting, source (file + line + table), optional: variant (method settings that
    select this row), protocol (settings of the paper's protocol: a run that differs gets a
    caveat), primary (default true), backbone_inferred, note.

Families: ``zeroshot:clip``, ``zeroshot:cupl``, ``zeroshot:wca`` (the ``zeroshot`` method with
that scorer), ``fair``, ``latteclip``, ``coft`` (also matches ``coft+``), ``region-probe``.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from functools import cache
from pathlib import Path
from typing import Any

from labelless.errors import LabellessError, did_you_mean

__all__ = [
    "PAPERS",
    "REQUIRED_FIELDS",
    "backbone_key",
    "compare",
    "comparison_markdown",
    "load_reference",
    "paper_notes",
    "reference_markdown",
    "resolve_paper",
]

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
PAPERS = ("fair", "latteclip", "coft", "region_scoring")
REQUIRED_FIELDS = ("paper", "table", "method", "family", "dataset", "backbone", "backbone_key",
                   "metric", "value", "source")
# Our method names that a reference family also covers.
FAMILY_ALIASES = {"coft": ("coft", "coft+")}

_HF_NAMES = {
    "openai/clip-vit-base-patch32": "ViT-B-32/openai",
    "openai/clip-vit-base-patch16": "ViT-B-16/openai",
    "openai/clip-vit-large-patch14": "ViT-L-14/openai",
    "laion/clip-vit-b-32-laion2b-s34b-b79k": "ViT-B-32/laion2b_s34b_b79k",
}


def backbone_key(spec: str) -> str:
    """``ARCH/WEIGHTS`` of a backbone spec, so that equivalent specs compare equal.

    >>> backbone_key("openclip:ViT-B-32:openai")
    'ViT-B-32/openai'
    >>> backbone_key("hf:openai/clip-vit-base-patch32")
    'ViT-B-32/openai'
    >>> backbone_key("openclip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
    'ViT-B-32/laion2b_s34b_b79k'

    Anything else (local checkpoints, the testbed) is returned unchanged.
    """
    spec = str(spec or "")
    low = spec.lower()
    for prefix in ("openclip:hf-hub:", "hf:"):
        if low.startswith(prefix) and low[len(prefix):] in _HF_NAMES:
            return _HF_NAMES[low[len(prefix):]]
    m = re.fullmatch(r"openclip:([^:]+):([A-Za-z0-9_.-]+)", spec)
    if m:
        arch = re.sub(r"-quickgelu$", "", m.group(1), flags=re.IGNORECASE)
        return f"{arch}/{m.group(2)}"
    return spec


def _check_entry(e: Any, where: str) -> None:
    if not isinstance(e, dict):
        raise LabellessError(f"{where}: expected an object, got {e!r}")
    missing = [k for k in REQUIRED_FIELDS if k not in e]
    if missing:
        raise LabellessError(f"{where}: missing field(s) {', '.join(missing)}")
    v = e["value"]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 100:
        raise LabellessError(f"{where}: value {v!r} is not a percentage in [0, 100]")


@cache
def _load_file(paper: str) -> dict:
    path = REFERENCE_DIR / f"{paper}.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise LabellessError(f"cannot read reference file {path}: {e}") from None
    for i, e in enumerate(doc.get("entries") or []):
        _check_entry(e, f"{path.name} entries[{i}]")
    return doc


def resolve_paper(paper: str) -> str:
    """The reference file key (``fair`` ...) of a paper given by key or printed name."""
    key = re.sub(r"[^a-z]", "", paper.lower())
    for p in PAPERS:
        if key in (re.sub(r"[^a-z]", "", p), re.sub(r"[^a-z]", "", _load_file(p)["paper"].lower())):
            return p
    prefixed = [p for p in PAPERS if key and re.sub(r"[^a-z]", "", p).startswith(key)]
    if len(prefixed) == 1:
        return prefixed[0]
    raise LabellessError(f"no reference data for paper '{paper}'.{did_you_mean(paper, PAPERS)} "
                         f"Available: {', '.join(PAPERS)}")


def load_reference(paper: str | None = None) -> list[dict]:
    """All stored entries (copies), or those of one paper (``fair``, ``latteclip``, ``coft``,
    ``region_scoring``; the printed paper name such as ``LaTTe-CLIP`` also works)."""
    papers = PAPERS if paper is None else (resolve_paper(paper),)
    return [dict(e) for p in papers for e in _load_file(p)["entries"]]


def paper_notes(paper: str) -> list[str]:
    """The transcription notes of one paper's reference file."""
    return list(_load_file(resolve_paper(paper)).get("notes") or [])


def _family_matches(ref_family: str | None, ours: str) -> bool:
    return ref_family is not None and ours in FAMILY_ALIASES.get(ref_family, (ref_family,))


def _variant_matches(variant: dict | None, method_config: dict) -> bool | None:
    """True/False when every variant key is in the run's method config; None when none is."""
    if not variant:
        return None
    keys = [k for k in variant if k in method_config]
    if not keys:
        return None
    return all(method_config[k] == variant[k] for k in keys)


def family_of(method: str, method_config: dict | None) -> str:
    """The method family used to match reference numbers: ``zeroshot:<scorer>`` or the method."""
    if method == "zeroshot":
        return f"zeroshot:{(method_config or {}).get('scorer', 'clip')}"
    return method


def compare(rows: list[dict], reference: list[dict] | None = None) -> list[dict]:
    """Match our runs to the papers' numbers by (family, dataset, backbone).

    ``rows``: dicts with ``family`` (or ``method`` + ``method_config``), ``dataset`` (the
    benchmark name), ``backbone_key`` (or ``backbone_spec``), ``top1`` and optionally ``run``,
    ``data`` and ``setting`` (e.g. :func:`labelless.bench.harness.collect_rows`). Seeds are
    averaged per (run, family, dataset, backbone). A reference row with a ``variant`` is used
    when the run's method config has those keys with those values; when the config has none of
    them, the reference's ``primary`` row is used. Returns one dict per (our group, matching
    paper number): ``run, family, dataset, backbone_key, setting, seeds, ours, ours_std, paper,
    table, paper_method, paper_value, delta, paper_setting, caveat``.
    """
    reference = load_reference() if reference is None else reference
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        fam = r.get("family") or family_of(r.get("method", ""), r.get("method_config"))
        key = backbone_key(r.get("backbone_key") or r.get("backbone_spec") or r.get("backbone") or "")
        groups.setdefault((r.get("run") or r.get("method"), fam, r.get("dataset"), key), []).append(r)
    out = []
    for (run, fam, dataset, key), members in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        refs = [e for e in reference if _family_matches(e.get("family"), fam)
                and e["dataset"] == dataset and e["backbone_key"] == key]
        if not refs:
            continue
        mcfg = members[0].get("method_config") or {}
        chosen = []
        for e in refs:
            v = _variant_matches(e.get("variant"), mcfg)
            if v is True or (v is None and e.get("primary", True)):
                chosen.append(e)
        vals = [m["top1"] for m in members if m.get("top1") is not None]
        ours = statistics.fmean(vals) if vals else None
        std = statistics.stdev(vals) if len(vals) > 1 else None
        for e in chosen:
            caveats = []
            if e.get("backbone_inferred"):
                caveats.append("paper's backbone inferred")
            for k, v in (e.get("protocol") or {}).items():
                if mcfg.get(k) != v:
                    caveats.append(f"paper: {k}={v}, this run: {k}={mcfg.get(k, '?')}")
            if e.get("note"):
                caveats.append(e["note"])
            out.append({
                "run": run, "family": fam, "dataset": dataset, "backbone_key": key,
                "setting": members[0].get("setting"), "seeds": len(vals), "ours": ours, "ours_std": std,
                "paper": e["paper"], "table": e["table"], "paper_method": e["method"],
                "paper_value": e["value"], "delta": None if ours is None else ours - e["value"],
                "paper_setting": e.get("setting"), "caveat": "; ".join(caveats),
            })
    return out


def _fmt(v: float | None, nd: int = 2, sign: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{v:+.{nd}f}" if sign else f"{v:.{nd}f}"


def comparison_markdown(matches: list[dict]) -> str:
    """A Markdown "ours vs paper" table of :func:`compare`'s output."""
    header = ["run", "data set", "backbone", "ours (top-1 %)", "seeds", "paper", "paper row",
              "paper (top-1 %)", "ours - paper", "setting (ours / paper)", "caveat"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for m in matches:
        ours = _fmt(m["ours"]) + (f" ± {m['ours_std']:.2f}" if m.get("ours_std") is not None else "")
        cells = [m["run"], m["dataset"], m["backbone_key"], ours, str(m["seeds"]),
                 f"{m['paper']} {m['table']}", m["paper_method"], _fmt(m["paper_value"]),
                 _fmt(m["delta"], sign=True), f"{m.get('setting') or '?'} / {m.get('paper_setting') or '?'}",
                 m.get("caveat") or ""]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    lines.append("Ours: mean ± sample std over seeds. Paper numbers from labelless/bench/reference/*.json "
                 "(see `labelless reference` for their sources and transcription notes).")
    return "\n".join(lines) + "\n"


def reference_markdown(entries: list[dict]) -> str:
    """The stored numbers as one Markdown table per (paper, table, backbone): rows = methods,
    columns = data sets."""
    blocks = []
    order: dict[tuple, list[dict]] = {}
    for e in entries:
        order.setdefault((e["paper"], e["table"], e["backbone"]), []).append(e)
    for (paper, table, backbone), es in order.items():
        cols: list[str] = []
        rows: dict[str, dict[str, dict]] = {}
        for e in es:
            if e["dataset"] not in cols:
                cols.append(e["dataset"])
            rows.setdefault(e["method"], {})[e["dataset"]] = e
        head = ["method", "family", *cols]
        lines = [f"### {paper}, {table} ({backbone}; top-1 %)", "",
                 "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for method, byds in rows.items():
            fam = next(iter(byds.values())).get("family") or ""
            cells = [method, fam] + [_fmt(byds[c]["value"]) if c in byds else "" for c in cols]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
