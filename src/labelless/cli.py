"""The ``labelless`` command: a thin layer over :mod:`labelless.runner` and friends.

Every subcommand turns flags into a config object and calls one library function. User errors
(:class:`~labelless.errors.LabellessError`) print ``error: ...`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from labelless.errors import LabellessError


def _runtime_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("runtime")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto)")
    g.add_argument("--batch-size", type=int, default=64, help="images per forward (default 64)")
    g.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0)")
    g.add_argument("--views-on", choices=["auto", "device", "cpu"], default="auto",
                   help="where crops and augmentations are made: device (batched on --device; the "
                        "loader only decodes), cpu (PIL in the loader) or auto (device on CUDA, "
                        "else cpu; default)")
    g.add_argument("--cache-dir", default=None, help="feature cache (default $LABELLESS_CACHE or ~/.cache/labelless)")
    g.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")
    g.add_argument("--seed", type=int, default=0)


def _runtime(args):
    from labelless.data.features import default_cache_dir
    from labelless.methods.base import Runtime

    cache = None if args.no_cache else (args.cache_dir or str(default_cache_dir()))
    return Runtime(
        device=args.device, batch_size=args.batch_size, num_workers=args.workers,
        cache_dir=cache, progress=args.progress, seed=args.seed, views_on=args.views_on,
    )


def _data_flags(p: argparse.ArgumentParser, method: bool) -> None:
    p.add_argument("--data", required=not method, help="data set spec, e.g. folder:root=DIR or eurosat:root=DIR,split=test")
    p.add_argument("--model", help="backbone spec, e.g. openclip:ViT-B-32:laion2b_s34b_b79k")
    p.add_argument("--classes", help="class names: a file (one per line, or a JSON list) or a comma list")
    p.add_argument("--texts", help="class texts, e.g. descriptions:path=cupl.json or templates:name=imagenet")
    p.add_argument("--label-texts", help="plain label prompts (default templates:name=clip)")
    p.add_argument("--out", help="run folder (default runs/<method>-<data>-s<seed>)")
    p.add_argument("--data-root", help="folder relative data roots are looked up in (default $LABELLESS_DATA)")
    p.add_argument("--overwrite", action="store_true",
                   help="clear the run folder first when it holds another run's results")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a method setting, e.g. --set optim.lr=1e-4 (repeatable)")


def _run_config(args, method: str, params: dict):
    from labelless.config import from_dict, load_yaml, merge_params, parse_set_flags
    from labelless.runner import RunConfig

    base: dict = {}
    if getattr(args, "config", None):
        base = load_yaml(args.config)
    for key, flag in (("model", "model"), ("data", "data"), ("eval_data", "eval_data"),
                      ("classes", "classes"), ("texts", "texts"), ("label_texts", "label_texts"),
                      ("out", "out")):
        value = getattr(args, flag, None)
        if value is not None:
            base[key] = value
    base["method"] = method if method else base.get("method", "zeroshot")
    base["seed"] = args.seed
    base.setdefault("params", {})
    base["params"] = {**base["params"], **params}
    runtime = base.pop("runtime", {})
    cfg = from_dict(RunConfig, {k: v for k, v in base.items()}, where="")
    rt = _runtime(args)
    for k, v in runtime.items():
        setattr(rt, k, v)
    cfg.runtime = rt
    overrides = parse_set_flags(args.set)
    if overrides:
        # merged into the mapping, validated once, whole, when the run builds the method config
        cfg.params = merge_params(cfg.params, overrides)
    return cfg


def cmd_zeroshot(args) -> None:
    from labelless.runner import run

    params = {"scorer": args.scorer}
    if args.crops is not None:
        params["crops"] = args.crops
    cfg = _run_config(args, "zeroshot", params)
    if cfg.texts == "templates:name=clip" and args.scorer in ("cupl", "wca") and not args.texts:
        print("note: --texts not given; CuPL/WCA then average the plain template only", file=sys.stderr)
    run(cfg, overwrite=args.overwrite)


def cmd_adapt(args) -> None:
    from labelless.engine.distributed import init_from_env
    from labelless.runner import run

    # under torchrun: join the process group (NCCL on GPUs, gloo on CPUs) and use this rank's
    # device; a plain launch is one process and this is a no-op
    info = init_from_env(args.device)
    cfg = _run_config(args, args.method, {})
    if info.world_size > 1:
        cfg.runtime.device = info.device
        cfg.runtime.progress = cfg.runtime.progress and info.is_main
    run(cfg, resume=args.resume, overwrite=args.overwrite)


def cmd_eval(args) -> None:
    from labelless.runner import eval_artifact

    eval_artifact(args.classifier, args.data, _runtime(args), out=args.out)


def cmd_predict(args) -> None:
    from labelless.runfolder import check_out_file
    from labelless.runner import check_classnames, predict_folder

    check_out_file(args.out)  # before any work
    rt = _runtime(args)
    if args.classifier:
        from labelless.methods.base import load_classifier

        clf, backbone = load_classifier(args.classifier, device=rt.device)
    else:
        if not (args.model and args.classes):
            raise LabellessError(
                "predict needs --classifier DIR (from zeroshot/adapt), or --model and --classes "
                "(plus optional --texts/--scorer) for a zero-shot classifier"
            )
        from labelless.backbones import load_backbone
        from labelless.data.classes import parse_classes
        from labelless.methods.base import FitContext
        from labelless.methods.zeroshot import ZeroShotConfig, build_zeroshot
        from labelless.text import build_texts

        backbone = load_backbone(args.model, device=rt.device)
        names = parse_classes(args.classes)
        check_classnames(names, f"--classes '{args.classes}'")
        ctx = FitContext(
            backbone=backbone, train=None, classnames=names,
            texts=build_texts(args.texts or "templates:name=clip", names),
            label_texts=build_texts(args.label_texts or "templates:name=clip", names),
            rt=rt, out_dir=Path("."),
        )
        clf = build_zeroshot(ctx, ZeroShotConfig(scorer=args.scorer))
    out = predict_folder(clf, backbone, args.images, args.out, rt, topk=args.topk)
    print(f"predictions: {out}")


def cmd_list(args) -> None:
    import labelless  # noqa: F401  (fills the registries)
    from labelless import registry

    if args.what == "backbones":
        from labelless.backbones import list_backbones

        names = list_backbones()
        if args.filter:
            names = [n for n in names if args.filter.lower() in n.lower()]
        print("\n".join(names))
        return
    reg = {
        "methods": registry.METHODS, "datasets": registry.DATASETS, "scorers": registry.SCORERS,
        "views": registry.VIEWS, "tuners": registry.TUNERS, "texts": registry.TEXT_SOURCES,
        "classifiers": registry.CLASSIFIERS, "estimators": registry.ESTIMATORS,
    }[args.what]
    width = max((len(n) for n in reg.names()), default=0)
    for name in reg.names():
        print(f"{name:<{width}}  {reg.describe(name)}")
        if args.verbose and args.what == "methods":
            import dataclasses

            for f in dataclasses.fields(reg.get(name).Config):
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                print(f"{'':<{width}}    {f.name} = {default!r}")


def cmd_evidence(args) -> None:
    from pathlib import Path

    from labelless.evidence import backfill

    dirs = sorted({p.parent for r in args.runs for p in Path(r).rglob("results.json")})
    if not dirs:
        raise LabellessError(f"no results.json under {', '.join(args.runs)}")
    done = 0
    for d in dirs:
        if (d / "classifier").is_dir() and backfill(d, _runtime(args), force=args.force) is not None:
            done += 1
            print(f"{d}: label_free added")
    print(f"{done} of {len(dirs)} run folders backfilled (the others had a record or no classifier)")


def cmd_aggregate(args) -> None:
    import statistics

    from labelless.eval import aggregate, plot_bars, write_tables
    from labelless.eval.aggregate import group_runs

    rows = aggregate(args.runs)
    if not rows:
        raise LabellessError(f"no results.json under '{args.runs}'")
    out = Path(args.out or args.runs)
    csv_path, md_path = write_tables(rows, out / "results.csv", out / "results.md")
    means: dict[str, dict[str, float]] = {}
    groups = group_runs(rows)[0]
    varying = [k for k in ("split", "backbone") if len({str(g.runs[0][k]) for g in groups}) > 1]
    for g in groups:  # one bar per config, the mean over its distinct seeds
        label = " ".join([str(g.runs[0]["method"]), *(str(g.runs[0][k]) for k in varying)])
        label += f" [{', '.join(g.differs)}]" if g.differs else ""
        seeds = [v for v in g.seed_values("top1") if v is not None]
        means.setdefault(label, {})[str(g.runs[0]["dataset"])] = statistics.fmean(seeds)
    if means:
        plot_bars(means, out / "results.png", title="top-1 accuracy", ylabel="top-1 accuracy (%)")
    print(md_path.read_text())
    print(f"wrote {csv_path}, {md_path}")
    if any(r.get("top1") is not None and r.get("est_top1") is not None for r in rows):
        # labels and label-free estimates side by side: how good is the estimate here?
        from labelless.eval.estimate_check import estimate_markdown, estimate_rows
        from labelless.utils.io import atomic_write_text

        est_md = atomic_write_text(out / "estimate.md", estimate_markdown(estimate_rows(args.runs)))
        print(est_md.read_text())
        print(f"wrote {est_md}")


def cmd_report(args) -> None:
    from labelless.report import build_report

    path = build_report(args.runs, args.out, per_class=args.per_class, thumb_size=args.thumb_size)
    print(f"report: {path}")


def cmd_export(args) -> None:
    from labelless.export import export_classifier

    res = export_classifier(args.classifier_dir, args.format, args.out,
                            check_images=args.check_images, device=args.device)
    for f in res.files:
        print(f"wrote {f}")
    if res.check is not None:
        c = res.check
        top1 = f", top-1 identical: {c['top1_identical']}" if "top1_identical" in c else ""
        print(f"check ({c['against']}, {c['n_images']} images): max |logit diff| "
              f"{c['max_abs_logit_diff']:.3g}{top1}")


def cmd_demo(args) -> None:
    from labelless.demo import demo

    demo(args.out, _runtime(args), only=args.only, task=args.task)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="labelless",
        description="Adapt CLIP-like models to your classes without labels.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    z = sub.add_parser("zeroshot", help="training-free CLIP / CuPL / WCA classification")
    _data_flags(z, method=False)
    z.add_argument("--scorer", choices=["clip", "cupl", "wca"], default="clip")
    z.add_argument("--crops", type=int, default=None, help="WCA: random crops per image (default 32)")
    z.add_argument("--config", help="YAML recipe (RunConfig fields)")
    _runtime_flags(z)
    z.set_defaults(func=cmd_zeroshot)

    a = sub.add_parser("adapt", help="label-free adaptation with a method (labelless list methods)")
    a.add_argument("--method", required=True)
    _data_flags(a, method=True)
    a.add_argument("--eval-data", help="labelled evaluation set (default: --data itself if labelled)")
    a.add_argument("--config", help="YAML recipe (RunConfig fields; params: the method's settings)")
    a.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    _runtime_flags(a)
    a.set_defaults(func=cmd_adapt)

    e = sub.add_parser("eval", help="evaluate a saved classifier on a labelled data set")
    e.add_argument("--classifier", required=True, help="the classifier folder of a run")
    e.add_argument("--data", required=True)
    e.add_argument("--out")
    _runtime_flags(e)
    e.set_defaults(func=cmd_eval)

    pr = sub.add_parser("predict", help="predict a folder of images; writes a CSV")
    pr.add_argument("--images", required=True, help="folder of images (searched recursively)")
    pr.add_argument("--classifier", help="a classifier folder written by zeroshot/adapt")
    pr.add_argument("--model")
    pr.add_argument("--classes")
    pr.add_argument("--texts")
    pr.add_argument("--label-texts")
    pr.add_argument("--scorer", choices=["clip", "cupl", "wca"], default="clip")
    pr.add_argument("--topk", type=int, default=5)
    pr.add_argument("--out", default="predictions.csv")
    _runtime_flags(pr)
    pr.set_defaults(func=cmd_predict)

    ls = sub.add_parser("list", help="show what is registered")
    ls.add_argument("what", choices=["backbones", "methods", "datasets", "scorers", "views", "tuners", "texts",
                                     "classifiers", "estimators"])
    ls.add_argument("filter", nargs="?", help="substring filter (backbones)")
    ls.add_argument("-v", "--verbose", action="store_true", help="methods: show their settings")
    ls.set_defaults(func=cmd_list)

    ex = sub.add_parser("export", help="export a classifier for use without labelless (open_clip, hf, onnx, torchscript)")
    ex.add_argument("classifier_dir", help="the classifier folder of a run")
    ex.add_argument("--format", required=True, choices=["open_clip", "hf", "onnx", "torchscript"])
    ex.add_argument("--out", required=True, help="output folder")
    ex.add_argument("--check-images", help="onnx/torchscript: compare with labelless's predictions on this image folder")
    ex.add_argument("--device", default="cpu", help="device used to load and trace (default cpu)")
    ex.set_defaults(func=cmd_export)

    d = sub.add_parser("demo", help="build the testbed and compare every method on it (CPU, minutes)")
    d.add_argument("--out", default="runs/demo", help="where the demo runs go (finished runs are reused)")
    d.add_argument("--only", nargs="*", help="run only entries whose name contains one of these")
    d.add_argument("--task", help="a testbed task file (YAML; default: the shipped task), e.g. one "
                   "drawn by 'labelless testbed suite'")
    _runtime_flags(d)
    d.set_defaults(func=cmd_demo)

    from labelless.bench.cli import add_commands as bench_commands

    bench_commands(sub)

    from labelless.textgen.cli import add_commands as textgen_commands

    textgen_commands(sub)

    from labelless.testbed.cli import add_commands as testbed_commands

    testbed_commands(sub)

    ag = sub.add_parser("aggregate", help="tabulate many results.json into CSV + Markdown + plot")
    ag.add_argument("runs", help="folder searched recursively for results.json")
    ag.add_argument("--out", help="where to write the tables (default: the runs folder)")
    ag.set_defaults(func=cmd_aggregate)

    ev = sub.add_parser("evidence", help="add the label-free record to run folders made before it existed")
    ev.add_argument("runs", nargs="+", help="run folders, searched recursively for results.json")
    ev.add_argument("--force", action="store_true", help="recompute records that exist")
    _runtime_flags(ev)
    ev.set_defaults(func=cmd_evidence)

    rp = sub.add_parser("report", help="a static HTML page of one or several runs (galleries, diagnostics)")
    rp.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (with results.json and predictions.csv)")
    rp.add_argument("--out", help="folder for report.html and its images (default: RUN_DIR/report, "
                                  "or <common parent>/report for several runs)")
    rp.add_argument("--per-class", type=int, default=4,
                    help="most confident and borderline images shown per class and run (default 4 each)")
    rp.add_argument("--thumb-size", type=int, default=112, help="thumbnail side in pixels (default 112)")
    rp.set_defaults(func=cmd_report)
    return p


def _plain_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings as the user reads them: ``warning: <message>``, without the source file and
    code line Python's default format adds."""
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import warnings

    # formatwarning, not showwarning: warnings still go through the warnings machinery (filters,
    # "once per location", pytest's recorder), only their text changes
    formatwarning, warnings.formatwarning = warnings.formatwarning, _plain_warning
    from labelless.utils.log import setup_cli_logging

    setup_cli_logging()  # library code logs; on the command line INFO goes to stdout
    if getattr(args, "data_root", None):
        import os

        os.environ["LABELLESS_DATA"] = args.data_root  # read by build_dataset (labelless.utils.paths)
    try:
        import labelless  # noqa: F401  (registries)

        args.func(args)
    except LabellessError as e:
        from labelless.utils.secrets import redact

        print(f"error: {redact(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: completed feature shards and checkpoints are kept; rerun (with --resume) to continue",
              file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = formatwarning
    return 0


if __name__ == "__main__":
    sys.exit(main())
