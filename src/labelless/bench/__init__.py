"""Benchmark harness: experiments from YAML, the papers' published numbers, comparisons.

``labelless bench EXPERIMENT.yaml`` (:func:`run_experiment`) runs methods x data sets x
backbones x seeds, skipping finished runs, then writes tables, plots and the "ours vs paper"
comparison; ``labelless reference`` prints the stored paper numbers (:func:`load_reference`).
"""

from labelless.bench.harness import (
    BenchReport,
    Experiment,
    PlannedRun,
    collect_rows,
    expand,
    format_plan,
    load_experiment,
    run_experiment,
    summarize,
)
from labelless.bench.reference import (
    backbone_key,
    compare,
    comparison_markdown,
    load_reference,
    reference_markdown,
)

__all__ = [
    "BenchReport",
    "Experiment",
    "PlannedRun",
    "backbone_key",
    "collect_rows",
    "compare",
    "comparison_markdown",
    "expand",
    "format_plan",
    "load_experiment",
    "load_reference",
    "reference_markdown",
    "run_experiment",
    "summarize",
]
