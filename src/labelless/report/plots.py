"""The report's figures (matplotlib, Agg canvas, PNG files beside ``report.html``).

Every function takes plain numbers from ``results.json`` (no tensors, no images) and writes one
PNG. With many classes (more than :data:`MANY`) per-class bars become sorted curves, which stay
readable at 1,000 classes and still show a collapse onto a few classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from labelless.eval.plots import _new_figure, _save, _short

__all__ = ["MANY", "plot_accuracy_vs_estimate", "plot_class_shares", "plot_confidence",
           "plot_flips", "plot_per_class"]

MANY = 30
_ZS = "#9aa0a6"  # the zero-shot reference is grey in every figure


def _style(ax, grid_axis: str = "y") -> None:
    ax.grid(axis=grid_axis, alpha=0.3)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _shares(counts: Sequence[int]) -> list[float]:
    n = sum(counts)
    return [100.0 * c / n if n else 0.0 for c in counts]


def plot_class_shares(
    runs: dict[str, Sequence[int]], zeroshot: Sequence[int] | None, classnames: Sequence[str], path: Path,
) -> Path:
    """Share of predictions per class for each run, beside the zero-shot reference's."""
    import numpy as np

    C = len(classnames)
    series = ([("zero-shot", zeroshot, _ZS)] if zeroshot is not None else []) + [
        (name, counts, f"C{k % 10}") for k, (name, counts) in enumerate(runs.items())]
    if C <= MANY:
        fig = _new_figure(min(max(6.0, 0.32 * C * max(1, len(series)) ** 0.5 + 3), 13.0), 4.0)
        ax = fig.add_subplot()
        x = np.arange(C)
        w = 0.8 / len(series)
        for k, (name, counts, color) in enumerate(series):
            ax.bar(x - 0.4 + w * (k + 0.5), _shares(counts), w, label=name, color=color)
        ax.axhline(100.0 / C, color="black", lw=0.8, ls=":", label="uniform")
        ax.set_xticks(x, [_short(c, 14) for c in classnames], rotation=45 if C > 6 else 0,
                      ha="right" if C > 6 else "center", fontsize=8)
    else:
        fig = _new_figure(6.5, 3.6)
        ax = fig.add_subplot()
        for name, counts, color in series:
            ax.plot(range(1, C + 1), sorted(_shares(counts), reverse=True), label=name, color=color)
        ax.axhline(100.0 / C, color="black", lw=0.8, ls=":", label="uniform")
        ax.set_xlabel("classes, sorted by share")
    ax.set_ylabel("share of predictions (%)")
    ax.set_title("predicted classes")
    _style(ax)
    fig.legend(loc="outside lower center", fontsize=7, ncols=min(5, len(series) + 1), frameon=False)
    return _save(fig, path)


def plot_confidence(hists: dict[str, dict], zeroshot: dict | None, path: Path) -> Path:
    """Max-softmax confidence histograms (``{"edges", "counts"}``), as % of images."""
    fig = _new_figure(5.2, 3.6)
    ax = fig.add_subplot()
    items = ([("zero-shot", zeroshot, _ZS, "--")] if zeroshot else []) + [
        (name, h, f"C{k % 10}", "-") for k, (name, h) in enumerate(hists.items())]
    for name, h, color, ls in items:
        edges, counts = h.get("edges") or [], h.get("counts") or []
        if not counts:
            continue
        pct = _shares(counts)
        ax.stairs(pct, edges, label=name, color=color, ls=ls, lw=1.6)
    ax.set_xlabel("max softmax probability")
    ax.set_ylabel("images (%)")
    ax.set_xlim(0, 1)
    ax.set_title("confidence")
    _style(ax)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_flips(flips: dict[str, Sequence[dict]], path: Path) -> Path:
    """Pseudo-label flips per epoch (or stage) for each run that logged them."""
    fig = _new_figure(5.2, 3.6)
    ax = fig.add_subplot()
    longest: list[str] = []
    for k, (name, rows) in enumerate(flips.items()):
        ys = [r.get("rate") for r in rows]
        ys = [float("nan") if v is None else float(v) for v in ys]
        ax.plot(range(len(ys)), ys, marker="o", ms=4, label=name, color=f"C{k % 10}")
        labels = [str(r.get("epoch", r.get("stage", i + 1))).split("/")[0] for i, r in enumerate(rows)]
        longest = labels if len(labels) > len(longest) else longest
    ax.set_xticks(range(len(longest)), longest, fontsize=8)
    ax.set_xlim(-0.5, len(longest) - 0.5)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("epoch (or round), against the one before")
    ax.set_ylabel("pseudo-labels that changed (%)")
    ax.set_title("pseudo-label flips")
    _style(ax)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_per_class(per_class: dict[str, dict[str, float | None]], classnames: Sequence[str], path: Path) -> Path:
    """Per-class accuracy (recall, %) of each run."""
    import numpy as np

    C = len(classnames)
    if C <= MANY:
        fig = _new_figure(min(max(6.0, 0.32 * C * max(1, len(per_class)) ** 0.5 + 3), 13.0), 3.6)
        ax = fig.add_subplot()
        x = np.arange(C)
        w = 0.8 / max(1, len(per_class))
        for k, (name, pc) in enumerate(per_class.items()):
            vals = [pc.get(c) for c in classnames]
            ax.bar(x - 0.4 + w * (k + 0.5), [0.0 if v is None else v for v in vals], w, label=name,
                   color=f"C{k % 10}")
        ax.set_xticks(x, [_short(c, 14) for c in classnames], rotation=45 if C > 6 else 0,
                      ha="right" if C > 6 else "center", fontsize=8)
    else:
        fig = _new_figure(6.5, 3.6)
        ax = fig.add_subplot()
        for k, (name, pc) in enumerate(per_class.items()):
            vals = sorted((v for v in pc.values() if v is not None and math.isfinite(v)), reverse=True)
            ax.plot(range(1, len(vals) + 1), vals, label=name, color=f"C{k % 10}")
        ax.set_xlabel("classes, sorted by accuracy")
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("per-class accuracy")
    _style(ax)
    fig.legend(loc="outside lower center", fontsize=7, ncols=min(5, len(per_class)), frameon=False)
    return _save(fig, path)


def plot_accuracy_vs_estimate(rows: Sequence[tuple[str, float | None, float | None]], path: Path) -> Path:
    """Horizontal bars per run: true top-1 (where labels exist) and the label-free estimate."""
    import numpy as np

    n = len(rows)
    fig = _new_figure(4.4, 1.2 + 0.45 * n)
    ax = fig.add_subplot()
    y = np.arange(n)[::-1]
    true = [r[1] for r in rows]
    est = [r[2] for r in rows]
    h = 0.38
    b1 = ax.barh(y + h / 2, [0 if v is None else v for v in true], h, label="top-1 (labels)", color="C0")
    b2 = ax.barh(y - h / 2, [0 if v is None else v for v in est], h, label="estimated (no labels)", color="C1")
    ax.bar_label(b1, labels=["" if v is None else f"{v:.1f}" for v in true], fontsize=7, padding=2)
    ax.bar_label(b2, labels=["" if v is None else f"{v:.1f}" for v in est], fontsize=7, padding=2)
    ax.set_yticks(y, [_short(r[0], 22) for r in rows], fontsize=8)
    ax.set_xlim(0, 105)
    ax.set_xlabel("top-1 accuracy (%)")
    _style(ax, "x")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22 - 0.3 / max(n, 1)), ncols=2, frameon=False)
    return _save(fig, path)
