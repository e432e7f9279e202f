"""Figures for results: confusion matrices, grouped bar charts, per-epoch curves.

Figures are built on :class:`matplotlib.figure.Figure` with an explicit Agg canvas, never
through ``pyplot``: no global backend switch, no figure registry to leak memory in long sweeps,
and no display needed. Files are written atomically (:func:`labelless.utils.io.atomic_save`);
the format follows the suffix of ``path`` (``.png``, ``.pdf``, ``.svg``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labelless.utils.io import atomic_save

__all__ = ["plot_bars", "plot_confusion", "plot_curves"]

_DPI = 150


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike) -> Path:
    return atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=_DPI))


def _short(name: str, width: int = 24) -> str:
    name = str(name)
    return name if len(name) <= width else name[: width - 1] + "…"


def plot_confusion(
    cm: Any,
    classnames: Sequence[str],
    path: str | os.PathLike,
    title: str = "Confusion matrix",
    normalize: bool = True,
) -> Path:
    """Plot a ``(C, C)`` confusion matrix (rows = true, columns = predicted) to ``path``.

    With ``normalize`` each row is divided by its total (recall per true class; empty rows stay
    0). Figure size and label font shrink with ``C`` so 10-100 classes stay readable; cell values
    are written only for up to 20 classes. Returns the path.
    """
    import numpy as np

    m = np.asarray(cm, dtype=float)
    C = len(classnames)
    if m.shape != (C, C):
        raise ValueError(f"confusion matrix shape {m.shape} does not match {C} class names")
    if normalize:
        rows = m.sum(axis=1, keepdims=True)
        m = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)

    side = min(max(4.0 + 0.16 * C, 5.0), 22.0)  # inches
    fontsize = max(3.0, min(9.0, 180.0 / max(C, 1)))
    fig = _new_figure(side + 1.2, side)
    ax = fig.add_subplot()
    vmax = 1.0 if normalize else max(float(m.max()), 1.0)
    im = ax.imshow(m, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of true class" if normalize else "count")
    labels = [_short(c, 24 if C <= 40 else 16) for c in classnames]
    ax.set_xticks(range(C), labels, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(C), labels, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if C <= 20:
        for i in range(C):
            for j in range(C):
                v = m[i, j]
                text = f"{v:.2f}" if normalize else f"{int(v)}"
                if normalize and v == 0:
                    text = "0"
                color = "white" if v > 0.6 * vmax else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=fontsize * 0.9, color=color)
    return _save(fig, path)


def plot_bars(
    table: dict[str, dict[str, float]],
    path: str | os.PathLike,
    title: str = "",
    ylabel: str = "top-1 accuracy (%)",
) -> Path:
    """Grouped bar chart of ``table[method][dataset] = value``: one group per data set
    (horizontal bars, one per method, when there is a single data set).

    Bars are labelled with their value (one decimal). Missing or NaN entries leave a gap.
    Returns the path.
    """
    import numpy as np

    methods = list(table)
    datasets: list[str] = []
    for row in table.values():
        for d in row:
            if d not in datasets:
                datasets.append(d)
    n_m, n_d = max(len(methods), 1), max(len(datasets), 1)
    if len(datasets) == 1:
        # one data set: a horizontal bar per method, named on the axis (no legend to read)
        vals = [table[m].get(datasets[0]) for m in methods]
        vals = [float("nan") if v is None else float(v) for v in vals]
        fig = _new_figure(7.0, 1.2 + 0.42 * n_m)
        ax = fig.add_subplot()
        y = np.arange(n_m)[::-1]
        bars = ax.barh(y, np.nan_to_num(vals, nan=0.0), color=[f"C{k % 10}" for k in range(n_m)])
        ax.bar_label(bars, labels=["" if math.isnan(v) else f"{v:.1f}" for v in vals], fontsize=8, padding=2)
        ax.set_yticks(y, methods, fontsize=8)
        ax.set_xlabel(ylabel)
        ax.set_title(f"{title} ({datasets[0]})" if title else datasets[0])
        ax.margins(x=0.1)
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
        return _save(fig, path)
    width = 0.8 / n_m
    fig = _new_figure(min(max(3.0 + 0.45 * n_m * n_d, 6.0), 24.0), 4.5)
    ax = fig.add_subplot()
    x = np.arange(len(datasets))
    fontsize = 7 if n_m * n_d <= 30 else 5
    for k, method in enumerate(methods):
        vals = []
        for d in datasets:
            v = table[method].get(d)
            vals.append(float("nan") if v is None else float(v))
        offsets = x - 0.4 + width * (k + 0.5)
        bars = ax.bar(offsets, np.nan_to_num(vals, nan=0.0), width, label=method)
        labels = ["" if math.isnan(v) else f"{v:.1f}" for v in vals]
        ax.bar_label(bars, labels=labels, fontsize=fontsize, padding=1)
    ax.set_xticks(x, datasets, rotation=30 if n_d > 6 else 0, ha="right" if n_d > 6 else "center")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.margins(y=0.12)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if methods:
        # Outside the axes so it never hides a bar; constrained layout makes room for it.
        fig.legend(loc="outside lower center", ncols=min(len(methods), 5), fontsize=8)
    return _save(fig, path)


def plot_curves(
    series: dict[str, Sequence[float]],
    path: str | os.PathLike,
    title: str = "",
    xlabel: str = "epoch",
    ylabel: str = "",
) -> Path:
    """Line plot of per-epoch curves ``series[name] = [v_1, v_2, ...]`` (x starts at 1).

    ``None``/NaN values leave gaps. Returns the path.
    """
    fig = _new_figure(6.5, 4.0)
    ax = fig.add_subplot()
    for name, values in series.items():
        ys = [float("nan") if v is None else float(v) for v in values]
        xs = list(range(1, len(ys) + 1))
        ax.plot(xs, ys, label=name, marker="o" if len(ys) <= 30 else None, markersize=3)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    return _save(fig, path)
