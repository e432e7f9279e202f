"""Evaluation: metrics, results JSON with provenance, plots and aggregation over runs."""

from labelless.eval.aggregate import aggregate, markdown_table, write_tables
from labelless.eval.metrics import Metrics, classification_metrics
from labelless.eval.plots import plot_bars, plot_confusion, plot_curves
from labelless.eval.results import RunRecorder, load_results, provenance, write_results

__all__ = [
    "Metrics",
    "RunRecorder",
    "aggregate",
    "classification_metrics",
    "load_results",
    "markdown_table",
    "plot_bars",
    "plot_confusion",
    "plot_curves",
    "provenance",
    "write_results",
    "write_tables",
]
