"""Library functions behind ``labelless describe-classes`` and ``labelless describe-images``.

* :func:`describe_classes`: CuPL-style class descriptions, ``{class: [sentences]}`` (the shape
  every text source reads: ``--texts descriptions:path=F.json``).
* :func:`describe_images`: LaTTe-CLIP image descriptions ``{image_path: [caption]}`` (what
  ``captions`` in LaTTe-CLIP's config reads).
* :func:`describe_groups`: LaTTe-CLIP group descriptions: collages of K images sharing a
  pseudo-label, one caption each, written as a groups JSON (:func:`load_groups`).

All three run their requests through :func:`run_requests`: a bounded thread pool, the on-disk
:class:`~labelless.textgen.cache.ReplyCache` (resumable, never pays twice), a tqdm bar with
rate and ETA, failures recorded and left to-do, and an immediate stop on a non-retryable error.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from labelless.data.images import load_rgb
from labelless.errors import ConfigError, LabellessError
from labelless.textgen.backends import Backend, RequestError, TextGenError
from labelless.textgen.cache import ReplyCache, request_key
from labelless.textgen.collage import make_collage
from labelless.textgen.prompts import (
    CLASS_SYSTEM,
    CUPL_QUESTIONS,
    GROUP_PROMPT,
    IMAGE_PROMPT,
    domain_prompt,
)
from labelless.utils.io import atomic_write_json, sha256_file
from labelless.utils.secrets import redact

log = logging.getLogger(__name__)


@dataclass
class Request:
    """One generation request. ``images`` is called in the worker (lazy: 50k images are never
    all in memory); ``key`` is its cache key."""

    key: str
    prompt: str
    images: Callable[[], list[Image.Image]] | None = None
    system: str | None = None


@dataclass
class GenerationReport:
    """What a run did: replies per key, failures (key -> last error), counts."""

    texts: dict[str, str] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    cached: int = 0
    requested: int = 0
    retries: int = 0  # transient failures (429, 5xx, timeouts, bad replies) that were retried

    def summary(self) -> str:
        return (f"{len(self.texts)} done ({self.cached} from cache, {self.requested} generated), "
                f"{len(self.failures)} failed, {self.retries} "
                f"retr{'y' if self.retries == 1 else 'ies'}")


def run_requests(
    requests: Sequence[Request],
    backend: Backend,
    cache: ReplyCache,
    *,
    workers: int = 4,
    progress: bool = True,
    desc: str = "generating",
) -> GenerationReport:
    """Run every request not already in ``cache`` with at most ``workers`` in flight.

    Good replies are appended to the cache as they arrive (so a kill loses at most the requests
    in flight). A request that still fails after the backend's retries is recorded as a failure
    and stays to-do; a :class:`RequestError` (4xx: bad model, bad key) stops the run at once.
    """
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    from labelless.engine import distributed

    ws, rank = distributed.world_size(), distributed.rank()
    if ws > 1:  # under torchrun: this rank's share, then an exchange (see _run_sharded)
        return _run_sharded(requests, backend, cache, ws, rank, workers=workers, progress=progress, desc=desc)
    return _run_local(requests, backend, cache, workers=workers, progress=progress, desc=desc)


def _run_local(requests, backend, cache: ReplyCache, *, workers: int, progress: bool, desc: str) -> GenerationReport:
    """One process's share of :func:`run_requests`."""
    report = GenerationReport()
    retries_before = getattr(backend, "retries", 0)
    todo: dict[str, Request] = {}
    for r in requests:  # identical requests (same image content and prompt) run once
        hit = cache.get(r.key)
        if hit is not None:
            report.texts[r.key] = hit
        elif r.key not in todo:
            todo[r.key] = r
    report.cached = len(report.texts)
    total = report.cached + len(todo)
    bar = tqdm(total=total, initial=report.cached, desc=desc, unit="req", disable=not progress,
               dynamic_ncols=True)

    def work(r: Request) -> str:
        images = r.images() if r.images is not None else None
        return backend.generate(r.prompt, images, system=r.system)

    pending = iter(todo.values())
    fatal: BaseException | None = None
    with ThreadPoolExecutor(max_workers=workers) as pool:
        running: dict = {}

        def fill() -> None:
            while len(running) < workers and fatal is None:
                r = next(pending, None)
                if r is None:
                    return
                running[pool.submit(work, r)] = r

        fill()
        while running:
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in done:
                r = running.pop(fut)
                try:
                    text = fut.result()
                except RequestError as e:
                    cache.put_failure(r.key, redact(str(e)))
                    report.failures[r.key] = redact(str(e))
                    fatal = fatal or e
                except (TextGenError, OSError, LabellessError) as e:
                    cache.put_failure(r.key, redact(str(e)))
                    report.failures[r.key] = redact(str(e))
                    log.warning("request failed for good: %s", redact(str(e)))
                else:
                    cache.put(r.key, text)
                    report.texts[r.key] = text
                    report.requested += 1
                bar.update(1)
                bar.set_postfix(failed=len(report.failures))
            fill()
    bar.close()
    report.retries = getattr(backend, "retries", 0) - retries_before
    if fatal is not None:
        raise fatal
    return report


def key_owner(key: str, world_size: int) -> int:
    """The rank that runs request ``key`` under torchrun: a function of the key alone, so ranks
    agree whatever their view of the cache or the order of the requests."""
    return int(key[:8], 16) % world_size


def _run_sharded(requests, backend, cache: ReplyCache, ws: int, rank: int, **kw) -> GenerationReport:
    """``run_requests`` under torchrun: each rank runs the requests it owns (:func:`key_owner`)
    with its own reply file ``<cache>.rank<r>`` (so ranks never append to one file; a killed run
    resumes from every rank file it can see), then the ranks exchange their replies; every rank
    returns the same complete report and rank 0 folds the replies into the main cache."""
    from labelless.engine import distributed

    keys = {r.key for r in requests}
    recovered: dict[str, str] = {}  # replies of an interrupted sharded run, in its rank files
    for path in sorted(cache.path.parent.glob(cache.path.name + ".rank*")):
        with ReplyCache(path) as other:
            recovered.update(other.done)
    known = {**recovered, **cache.done}
    mine = [r for r in requests if key_owner(r.key, ws) == rank]
    with ReplyCache(cache.path.with_name(f"{cache.path.name}.rank{rank}")) as own:
        for key, text in known.items():
            own.done.setdefault(key, text)
        report, error = GenerationReport(), None
        try:
            report = _run_local(mine, backend, own, **kw)
        except LabellessError as e:  # finish the exchange, then raise on every rank
            error = e
        # every reply this rank holds, also those it got before an error: nothing is lost
        texts = {k: v for k, v in own.done.items() if k in keys}
    parts = distributed.all_gather_object(
        {"texts": texts, "failures": report.failures, "requested": report.requested,
         "retries": report.retries, "error": None if error is None else f"rank {rank}: {redact(str(error))}"})
    merged = GenerationReport()
    for part in parts:
        merged.texts.update(part["texts"])
        merged.failures.update(part["failures"])
        merged.requested += part["requested"]
        merged.retries += part["retries"]
    merged.cached = sum(1 for k in keys if k in known)
    if distributed.is_main():
        for key, text in merged.texts.items():
            if key not in cache.done:
                cache.put(key, text)
    distributed.barrier()
    if distributed.is_main():  # everything is in the main cache now
        for path in cache.path.parent.glob(cache.path.name + ".rank*"):
            path.unlink(missing_ok=True)
    errors = [p["error"] for p in parts if p["error"]]
    if errors:
        raise TextGenError("; ".join(errors))
    return merged


# --------------------------------------------------------------------------- class descriptions


def describe_classes(
    classnames: Sequence[str],
    backend: Backend,
    cache: ReplyCache,
    *,
    questions: Sequence[str] = CUPL_QUESTIONS,
    samples: int = 10,
    system: str | None = CLASS_SYSTEM,
    workers: int = 4,
    progress: bool = True,
) -> tuple[dict[str, list[str]], GenerationReport]:
    """CuPL: ask every question about every class ``samples`` times (sample k is its own cache
    entry, so use a sampling temperature > 0 for varied answers, CuPL used 0.99).

    Returns ``{class: [sentences]}`` (classes in order, sentences in question/sample order,
    exact duplicates dropped) and the report. Classes whose every request failed are absent.
    """
    if samples < 1:
        raise ConfigError(f"samples must be >= 1, got {samples}")
    ident = backend.identity()
    plan: list[tuple[str, str]] = []
    reqs = []
    for c in classnames:
        for q in questions:
            prompt = q.replace("{c}", c)
            for k in range(samples):
                key = request_key(ident, prompt, [], system, sample=k)
                plan.append((c, key))
                reqs.append(Request(key, prompt, None, system))
    report = run_requests(reqs, backend, cache, workers=workers, progress=progress,
                          desc="class descriptions")
    out: dict[str, list[str]] = {}
    for c, key in plan:
        text = report.texts.get(key)
        if text is not None and text not in out.setdefault(c, []):
            out[c].append(text)
    return {c: v for c, v in out.items() if v}, report


# --------------------------------------------------------------------------- image descriptions


def _rel(path: str, root: str | None) -> str:
    if root is None:
        return str(path)
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:
        return str(path)


def _hashes(paths: Sequence[str], progress: bool) -> dict[str, str]:
    out = {}
    for p in tqdm(paths, desc="hashing images", disable=not progress or len(paths) < 1000, unit="img"):
        out[p] = sha256_file(p)
    return out


def describe_images(
    paths: Sequence[str],
    backend: Backend,
    cache: ReplyCache,
    *,
    domain: str,
    prompt: str = IMAGE_PROMPT,
    root: str | None = None,
    workers: int = 4,
    progress: bool = True,
) -> tuple[dict[str, list[str]], GenerationReport]:
    """LaTTe-CLIP image descriptions: one caption per image for ``prompt`` with ``{domain}``.

    Returns ``{image_path: [caption]}`` (paths relative to ``root`` when given) and the report;
    images whose request failed are absent (the report lists them).
    """
    text = domain_prompt(prompt, domain)
    ident = backend.identity()
    hashes = _hashes(list(paths), progress)
    reqs, keys = [], {}
    for p in paths:
        key = request_key(ident, text, [hashes[p]])
        keys[p] = key
        reqs.append(Request(key, text, (lambda p=p: [load_rgb(p)])))
    report = run_requests(reqs, backend, cache, workers=workers, progress=progress,
                          desc="image descriptions")
    out = {_rel(p, root): [report.texts[k]] for p, k in keys.items() if k in report.texts}
    return out, report


def plan_groups(
    paths: Sequence[str],
    labels: Sequence[str],
    *,
    group_size: int = 4,
    per_class: int | None = None,
    seed: int = 0,
) -> list[dict]:
    """Groups of images sharing a pseudo-label.

    ``per_class=None`` (LaTTe-CLIP's scripts): one group per image, the image plus
    ``group_size - 1`` others drawn at random from its class; ``per_class=G``: G random groups
    of ``group_size`` per class (cheaper). Classes with fewer images give smaller groups.
    Returns ``[{"class", "anchor", "images"}]``, deterministic in ``seed``.
    """
    if group_size < 1:
        raise ConfigError(f"group_size must be >= 1, got {group_size}")
    if len(paths) != len(labels):
        raise ConfigError(f"{len(paths)} images but {len(labels)} pseudo-labels")
    by_class: dict[str, list[str]] = {}
    for p, c in zip(paths, labels):
        by_class.setdefault(c, []).append(p)
    groups = []
    if per_class is None:
        for i, (p, c) in enumerate(zip(paths, labels)):
            rng = random.Random(f"{seed}-{i}")
            others = [q for q in by_class[c] if q != p]
            members = [p] + rng.sample(others, min(group_size - 1, len(others)))
            groups.append({"class": c, "anchor": p, "images": members})
    else:
        if per_class < 1:
            raise ConfigError(f"groups per class must be >= 1, got {per_class}")
        for c in sorted(by_class):
            rng = random.Random(f"{seed}-{c}")
            for _ in range(per_class):
                members = rng.sample(by_class[c], min(group_size, len(by_class[c])))
                groups.append({"class": c, "anchor": None, "images": members})
    return groups


def describe_groups(
    groups: list[dict],
    backend: Backend,
    cache: ReplyCache,
    *,
    domain: str,
    prompt: str = GROUP_PROMPT,
    collage_size: int = 672,
    root: str | None = None,
    workers: int = 4,
    progress: bool = True,
) -> tuple[dict, GenerationReport]:
    """LaTTe-CLIP group descriptions: each group (from :func:`plan_groups`) becomes a collage
    (:func:`~labelless.textgen.collage.make_collage`) captioned with ``prompt``.

    Returns the groups JSON object ``{"prompt", "domain", "backend", "collage_size",
    "groups": [{"class", "anchor", "images", "caption"}]}`` (failed groups are left out) and
    the report.
    """
    text = domain_prompt(prompt, domain)
    ident = backend.identity()
    hashes = _hashes(sorted({p for g in groups for p in g["images"]}), progress)
    reqs, keyed = [], []
    for g in groups:
        key = request_key(ident, text, [hashes[p] for p in g["images"]],
                          extra={"collage": collage_size})
        members = list(g["images"])
        reqs.append(Request(key, text, (lambda m=members: [make_collage([load_rgb(p) for p in m], collage_size)])))
        keyed.append((g, key))
    report = run_requests(reqs, backend, cache, workers=workers, progress=progress,
                          desc="group descriptions")
    out = []
    for g, key in keyed:
        if key in report.texts:
            out.append({
                "class": g["class"],
                "anchor": None if g.get("anchor") is None else _rel(g["anchor"], root),
                "images": [_rel(p, root) for p in g["images"]],
                "caption": report.texts[key],
            })
    doc = {"prompt": text, "domain": domain, "backend": backend.describe(),
           "collage_size": collage_size, "groups": out}
    return doc, report


# --------------------------------------------------------------------------- files


def load_groups(path: str | Path) -> list[dict]:
    """Read a groups JSON (:func:`describe_groups`): a list of ``{"class", "caption", ...}``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"groups file '{path}': {e}") from None
    groups = data.get("groups") if isinstance(data, dict) else data
    if not isinstance(groups, list):
        raise ConfigError(f"groups file '{path}': expected {{'groups': [...]}}")
    for i, g in enumerate(groups):
        if not (isinstance(g, dict) and isinstance(g.get("class"), str)
                and isinstance(g.get("caption"), str) and g["caption"].strip()):
            raise ConfigError(f"groups file '{path}': group #{i} needs a 'class' and a non-empty 'caption'")
    return groups


def read_pseudo_labels(path: str | Path) -> dict[str, str]:
    """Pseudo-labels ``{image_path: class}`` from a JSON object or the CSV of ``labelless
    predict`` (columns ``path``, ``predicted``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pseudo-label file '{path}' does not exist")
    if path.suffix.lower() == ".csv":
        import csv

        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if rows and not {"path", "predicted"} <= set(rows[0]):
            raise ConfigError(f"'{path}': expected the columns path,predicted (labelless predict's CSV)")
        return {r["path"]: r["predicted"] for r in rows if r.get("predicted")}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"pseudo-label file '{path}': {e}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ConfigError(f"pseudo-label file '{path}': expected {{image_path: class}}")
    return data


def write_json(path: str | Path, obj) -> Path:
    """Atomically write ``obj`` as JSON (a kill never leaves a half-written output)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(path, obj)
