"""The ``bench``, ``reference`` and ``region-sweep`` subcommands; ``labelless.cli`` calls
:func:`add_commands`."""

from __future__ import annotations

import argparse


def _runtime_flags(p: argparse.ArgumentParser) -> None:
    """The usual runtime flags, except --seed (seeds come from the experiment's grid) and
    --no-cache (``labelless.runner.run`` always fills in the default cache).

    Defaults are None so that a flag overrides the experiment's ``defaults.runtime`` only when
    given.
    """
    g = p.add_argument_group("runtime (overrides the experiment's defaults.runtime)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: auto)")
    g.add_argument("--batch-size", type=int, default=None, help="images per forward (default 64)")
    g.add_argument("--workers", type=int, default=None, help="DataLoader workers (default 0)")
    g.add_argument("--cache-dir", default=None,
                   help="feature cache (default $LABELLESS_CACHE or ~/.cache/labelless)")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bars")


def runtime_overrides(args) -> dict:
    """Runtime fields given on the command line (None = not given)."""
    return {"device": args.device, "batch_size": args.batch_size, "num_workers": args.workers,
            "cache_dir": args.cache_dir, "progress": args.progress}


def cmd_bench(args) -> None:
    from labelless.bench.harness import run_experiment

    run_experiment(args.experiment, runs_dir=args.runs_dir, dry_run=args.dry_run, only=args.only,
                   resume=args.resume, runtime=runtime_overrides(args))


def cmd_reference(args) -> None:
    from labelless.bench.reference import (
        PAPERS,
        load_reference,
        paper_notes,
        reference_markdown,
        resolve_paper,
    )

    entries = load_reference(args.paper)
    if args.dataset:
        entries = [e for e in entries if e["dataset"] == args.dataset]
    if args.family:
        entries = [e for e in entries if e.get("family") == args.family]
    print(reference_markdown(entries) if entries else "no stored number matches")
    if args.notes:
        for p in PAPERS if args.paper is None else (resolve_paper(args.paper),):
            print(f"\nNotes ({p}):")
            for n in paper_notes(p):
                print(f"- {n}")


def cmd_region_sweep(args) -> None:
    from labelless.bench.region_sweep import format_rows, run_region_sweep
    from labelless.config import apply_overrides, parse_set_flags
    from labelless.methods.base import Runtime
    from labelless.methods.region_probe import RegionProbeConfig

    base = apply_overrides(RegionProbeConfig(), parse_set_flags(args.set))
    rt = Runtime(device=args.device, batch_size=args.batch_size, progress=args.progress, seed=args.seed)
    rows = run_region_sweep(args.model, args.data, args.eval_data, args.out, args.texts, args.classes,
                            tuple(args.candidates), base, tuple(args.labels), tuple(args.tables), rt)
    print(format_rows(rows))


def add_commands(subparsers) -> None:
    """Add ``bench``, ``reference`` and ``region-sweep`` to the ``labelless`` subcommand parser."""
    b = subparsers.add_parser(
        "bench", help="run an experiment file (methods x data sets x backbones x seeds), tabulate, compare",
        description="Run every run of an experiment YAML that has no results yet, then write "
                    "results.csv/.md, plots and the comparison with the papers under RUNS_DIR/<name>/.",
    )
    b.add_argument("experiment", help="experiment YAML, e.g. experiments/testbed/main.yaml")
    b.add_argument("--runs-dir", default="runs", help="root of the run folders (default runs)")
    b.add_argument("--dry-run", action="store_true", help="print the plan (what would run or be skipped) and stop")
    b.add_argument("--only", action="append", metavar="PATTERN",
                   help="run only runs whose id RUN/DATA/MODEL/sSEED contains PATTERN (or matches it as a "
                        "glob with * ? []); repeatable")
    b.add_argument("--resume", action="store_true",
                   help="continue interrupted runs (checkpoint but no results) instead of stopping at them")
    _runtime_flags(b)
    b.set_defaults(func=cmd_bench)

    r = subparsers.add_parser("reference", help="print the papers' published numbers stored in labelless")
    r.add_argument("--paper", help="fair, latteclip, coft or region_scoring (default: all)")
    r.add_argument("--dataset", help="only this data set (registry name, e.g. eurosat)")
    r.add_argument("--family", help="only this method family (e.g. fair, zeroshot:cupl)")
    r.add_argument("--notes", action="store_true", help="also print the transcription notes")
    r.set_defaults(func=cmd_reference)

    p = subparsers.add_parser(
        "region-sweep", help="the region-probe paper's Tables 1-3 as a sweep on cached features",
        description="Extract frozen region features once per region source, train the region "
                    "probe for every configuration of the paper's Tables 1-3 and write rows.json/"
                    "rows.csv under --out.",
    )
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="training split (unlabelled is fine for labels=pseudo)")
    p.add_argument("--eval-data", required=True, help="labelled evaluation split (use val for choices)")
    p.add_argument("--texts", default="templates:name=clip")
    p.add_argument("--classes", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--candidates", nargs="+", default=["crops"], choices=["crops", "sam"])
    p.add_argument("--labels", nargs="+", default=["pseudo", "true"], choices=["pseudo", "true"])
    p.add_argument("--tables", nargs="+", type=int, default=[1, 2, 3], choices=[1, 2, 3])
    p.add_argument("--set", nargs="*", default=[], help="base RegionProbeConfig overrides key=value")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    p.set_defaults(func=cmd_region_sweep)
