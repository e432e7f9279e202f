"""``labelless describe-classes`` and ``labelless describe-images``: thin argparse wrappers.

The lead's ``cli.py`` calls :func:`add_commands(subparsers)`; every command only parses flags,
builds a backend and calls the library functions of :mod:`labelless.textgen.generate`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from labelless.errors import ConfigError
from labelless.textgen.backends import (
    ENV_BASE_URL,
    ENV_MODEL,
    RetryPolicy,
    TextGenError,
    make_backend,
)
from labelless.textgen.cache import ReplyCache
from labelless.textgen.prompts import CUPL_QUESTIONS, GROUP_PROMPT, IMAGE_PROMPT, load_questions


def _backend_flags(p: argparse.ArgumentParser, temperature: float, max_tokens: int) -> None:
    g = p.add_argument_group("LLM / LMM backend")
    g.add_argument("--backend", choices=("openai", "hf"), default="openai",
                   help="openai: any OpenAI-compatible server (vLLM, Ollama, LM Studio, llama.cpp); "
                   "hf: a local transformers image-text-to-text model")
    g.add_argument("--llm-model", default=None,
                   help=f"model name (server) or hub id/folder (hf); default ${ENV_MODEL}")
    g.add_argument("--base-url", default=None,
                   help=f"server URL, e.g. http://localhost:8000/v1; default ${ENV_BASE_URL}")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="name of the environment variable holding the API key (never logged)")
    g.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    g.add_argument("--retries", type=int, default=5, help="retries on 429/5xx/timeouts/bad replies")
    g.add_argument("--backoff", type=float, default=1.0, help="first wait before re-asking after a malformed or empty reply (doubles each time); "
                   "HTTP errors wait as the openai client does (0.5 s doubling, or Retry-After)")
    g.add_argument("--temperature", type=float, default=temperature)
    g.add_argument("--max-tokens", type=int, default=max_tokens)
    g.add_argument("--workers", type=int, default=4, help="requests in flight (hf: forced to 1)")
    g.add_argument("--device", default="auto", help="hf backend: cpu, cuda, auto")
    g.add_argument("--dtype", default="auto", help="hf backend: auto, float16, bfloat16, float32")
    g.add_argument("--cache", default=None,
                   help="reply cache (JSONL); default <out>.cache.jsonl. Rerun to resume.")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    g.add_argument("--allow-partial", action="store_true",
                   help="write the output even when some requests failed for good (default: "
                   "write nothing and exit with an error, so no later command takes a partial "
                   "file for a complete one)")


def _make_backend(args):
    if args.backend == "openai":
        return make_backend(
            "openai", model=args.llm_model, base_url=args.base_url,
            api_key=os.environ.get(args.api_key_env) or None, timeout=args.timeout,
            temperature=args.temperature, max_tokens=args.max_tokens,
            retry=RetryPolicy(max_retries=args.retries, backoff=args.backoff),
        )
    args.workers = 1
    return make_backend("hf", model=args.llm_model or os.environ.get(ENV_MODEL, ""),
                        device=args.device, dtype=args.dtype, max_new_tokens=args.max_tokens)


def _join_ranks(args):
    """Under torchrun, join the process group: each rank then runs its share of the requests
    (``labelless.textgen.generate.key_owner``) and rank 0 writes the outputs. A plain launch is
    one process."""
    from labelless.engine.distributed import init_from_env

    info = init_from_env("cpu" if args.backend == "openai" else args.device)
    if info.world_size > 1:
        if args.backend == "hf":
            args.device = info.device  # one local model per GPU
        args.progress = args.progress and info.is_main
    return info


def _cache(args, out: str) -> ReplyCache:
    return ReplyCache(args.cache or f"{out}.cache.jsonl")


def _report(report, what: str) -> None:
    print(f"{what}: {report.summary()}")
    if report.failures:
        print(f"  {len(report.failures)} requests failed (recorded in the cache; rerun to retry them). "
              f"First: {next(iter(report.failures.values()))}")


def _refuse_incomplete(args, out: str, what: str, missing: list[str], report) -> None:
    """Without ``--allow-partial``, an output that lacks some items is not written (a later
    command would take it for complete): raise, naming what is missing and how to finish."""
    if not missing or args.allow_partial:
        return
    first = next(iter(report.failures.values()), None)
    raise TextGenError(
        f"{what}: no reply for {len(missing)} item(s) ({', '.join(missing[:5])}"
        f"{' ...' if len(missing) > 5 else ''}); {report.summary()}"
        + (f". First error: {first}" if first else "")
        + f". Nothing was written to '{out}'. The replies received are kept in "
        f"'{args.cache or out + '.cache.jsonl'}': rerun the same command to request only the "
        "missing ones, or pass --allow-partial to write what was described."
    )


def cmd_describe_classes(args) -> None:
    from labelless.data.classes import parse_classes
    from labelless.textgen.generate import describe_classes, write_json

    classes = parse_classes(args.classes)
    if args.style == "coder" and args.questions:
        raise ConfigError("--questions is for --style cupl; --style coder asks its own five kinds of question")
    questions = load_questions(args.questions) if args.questions else CUPL_QUESTIONS
    info = _join_ranks(args)
    backend = _make_backend(args)
    with _cache(args, args.out) as cache:
        if args.style == "coder":
            from labelless.textgen.coder import describe_classes_coder

            texts, report = describe_classes_coder(
                classes, backend, cache, samples=1 if args.samples is None else args.samples, workers=args.workers,
                progress=args.progress,
            )
        else:
            texts, report = describe_classes(
                classes, backend, cache, questions=questions, samples=10 if args.samples is None else args.samples,
                workers=args.workers, progress=args.progress,
            )
    if not info.is_main:
        return
    missing = [c for c in classes if c not in texts]
    _refuse_incomplete(args, args.out, "class descriptions", missing, report)
    write_json(args.out, texts)
    _report(report, "class descriptions")
    print(f"wrote {args.out} ({len(texts)} classes)"
          + (f"; no description for {len(missing)}: {', '.join(missing[:5])}" if missing else ""))
    print(f"use it with: --texts descriptions:path={args.out}" + (",missing=template" if missing else ""))


def _images(args) -> list[str]:
    from labelless.data.images import scan_images

    root = Path(args.images)
    if not root.is_dir():
        raise ConfigError(f"--images '{root}' is not a folder")
    paths = [str(p) for p in scan_images(root)]
    if not paths:
        raise ConfigError(f"no image files under '{root}'")
    return paths


def cmd_describe_images(args) -> None:
    from labelless.textgen.generate import (
        _rel,
        describe_groups,
        describe_images,
        plan_groups,
        read_pseudo_labels,
        write_json,
    )

    if args.out is None and args.groups_out is None:
        raise ConfigError("nothing to do: pass --out captions.json and/or --groups-out groups.json")
    paths = _images(args)
    root = str(Path(args.images))
    info = _join_ranks(args)
    backend = _make_backend(args)
    if args.out:
        with _cache(args, args.out) as cache:
            caps, report = describe_images(
                paths, backend, cache, domain=args.domain, prompt=args.prompt, root=root,
                workers=args.workers, progress=args.progress,
            )
        if info.is_main:
            missing = [p for p in paths if _rel(p, root) not in caps]
            _refuse_incomplete(args, args.out, "image descriptions", missing, report)
            write_json(args.out, caps)
            _report(report, "image descriptions")
            print(f"wrote {args.out} ({len(caps)} of {len(paths)} images)")
    if args.groups_out:
        if not args.pseudo_labels:
            raise ConfigError(
                "--groups-out needs --pseudo-labels (the CSV of `labelless predict` or a JSON "
                "{image: class}) to group images that share a pseudo-label"
            )
        labels = read_pseudo_labels(args.pseudo_labels)
        by_abs = {os.path.abspath(k if os.path.isabs(k) else os.path.join(root, k)): v
                  for k, v in labels.items()}
        keep = [p for p in paths if os.path.abspath(p) in by_abs]
        if not keep:
            raise ConfigError(f"no image under '{root}' has a pseudo-label in '{args.pseudo_labels}'")
        groups = plan_groups(keep, [by_abs[os.path.abspath(p)] for p in keep],
                             group_size=args.group_size, per_class=args.groups_per_class, seed=args.seed)
        with _cache(args, args.groups_out) as cache:
            doc, report = describe_groups(
                groups, backend, cache, domain=args.domain, prompt=args.group_prompt,
                collage_size=args.collage_size, root=root, workers=args.workers,
                progress=args.progress,
            )
        if info.is_main:
            if len(doc["groups"]) < len(groups):
                done = {(g["class"], tuple(g["images"])) for g in doc["groups"]}
                missing = [f"group of '{g['class']}' #{i}" for i, g in enumerate(groups)
                           if (g["class"], tuple(_rel(p, root) for p in g["images"])) not in done]
                _refuse_incomplete(args, args.groups_out, "group descriptions", missing, report)
            write_json(args.groups_out, doc)
            _report(report, "group descriptions")
            print(f"wrote {args.groups_out} ({len(doc['groups'])} groups)")


def add_commands(subparsers) -> None:
    """Add ``describe-classes`` and ``describe-images`` to the ``labelless`` sub-parsers."""
    dc = subparsers.add_parser(
        "describe-classes",
        help="class descriptions from an LLM (CuPL- or CODER-style) -> {class: [sentences]} JSON",
    )
    dc.add_argument("--classes", required=True, help="class list file (one per line) or comma list")
    dc.add_argument("--out", required=True, help="output JSON {class: [sentences]}")
    dc.add_argument("--questions", default=None,
                    help="JSON list of question templates with {c} (default: CuPL's 5 generic ones)")
    dc.add_argument("--style", choices=("cupl", "coder"), default="cupl",
                    help="cupl: CuPL's questions, answers kept as sentences; coder: CODER's five "
                    "text types (name, synonyms, attributes, similar objects, one-vs-one "
                    "differences for every pair of classes) filled into its templates")
    dc.add_argument("--samples", type=int, default=None,
                    help="answers per question (default: cupl 10 as CuPL, coder 1 as CODER)")
    _backend_flags(dc, temperature=0.99, max_tokens=60)
    dc.set_defaults(func=cmd_describe_classes)

    di = subparsers.add_parser(
        "describe-images",
        help="LaTTe-CLIP image and group descriptions from an LMM -> captions/groups JSON",
    )
    di.add_argument("--images", required=True, help="folder of images (searched recursively)")
    di.add_argument("--domain", required=True, help="what the images show: car, flower, pet, texture ...")
    di.add_argument("--out", default=None, help="image descriptions JSON {image_path: [caption]}")
    di.add_argument("--prompt", default=IMAGE_PROMPT, help="image prompt ({domain} is filled)")
    di.add_argument("--groups-out", default=None, help="group descriptions JSON")
    di.add_argument("--pseudo-labels", default=None,
                    help="CSV from `labelless predict` or JSON {image: class} used to form groups")
    di.add_argument("--group-size", type=int, default=4, help="images per collage (LaTTe-CLIP: 4)")
    di.add_argument("--groups-per-class", type=int, default=None,
                    help="G random groups per class (default: one group per image, as LaTTe-CLIP)")
    di.add_argument("--group-prompt", default=GROUP_PROMPT)
    di.add_argument("--collage-size", type=int, default=672, help="collage side in pixels")
    di.add_argument("--seed", type=int, default=0)
    _backend_flags(di, temperature=0.0, max_tokens=77)
    di.set_defaults(func=cmd_describe_images)
