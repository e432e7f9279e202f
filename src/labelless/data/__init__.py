"""Data sets: robust image loading, folders, CSV lists and the CoOp benchmarks.

``build_dataset("eurosat:root=data/eurosat,split=test")`` is the entry point; every
data-set kind is registered in :data:`labelless.registry.DATASETS` when this package is
imported (the builders live in :mod:`.folders` and :mod:`.benchmarks`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

from labelless.data import benchmarks as _benchmarks  # noqa: F401 - registers the benchmarks
from labelless.data.benchmarks import (
    BENCHMARKS,
    RESISC45_CLASSNAMES,
    Benchmark,
    read_zhou_split,
    resisc45_classname,
)
from labelless.data.classes import (
    NAME_MODES,
    check_classnames,
    normalize_classname,
    parse_classes,
)
from labelless.data.folders import (
    UNKNOWN,
    ImageDataset,
    Sample,
    align_classes,
    check_missing,
)
from labelless.data.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    CorruptImageError,
    ImageTooLargeError,
    load_rgb,
    scan_images,
    to_rgb,
)
from labelless.errors import DataError, did_you_mean
from labelless.registry import DATASETS
from labelless.spec import parse_spec
from labelless.utils.paths import resolve_data_path

#: options every data set spec accepts (handled here, not by the builders)
GENERIC_OPTIONS = ("limit",)


def _check_options(name: str, builder: Callable, opts: dict[str, str]) -> None:
    params = [p for p in inspect.signature(builder).parameters if p != "classes"] + list(GENERIC_OPTIONS)
    unknown = [k for k in opts if k not in params]
    if unknown:
        k = unknown[0]
        raise DataError(
            f"data set '{name}' has no option '{k}'.{did_you_mean(k, params)} "
            f"Options: {', '.join(params)}"
        )


def _limit(dataset: ImageDataset, name: str, value) -> ImageDataset:
    """A fixed random subset (seed 0) of ``value`` images, in data set order."""
    import torch

    try:
        n = int(value)
        if n < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise DataError(f"data set '{name}': limit must be a positive integer, got '{value}'") from None
    if n >= len(dataset):
        return dataset
    keep = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n].sort().values
    return dataset.subset(keep.tolist())


def _build_one(builder: Callable, opts: dict[str, str], classes: Sequence[str] | None) -> ImageDataset:
    takes_classes = "classes" in inspect.signature(builder).parameters
    if takes_classes:
        dataset = builder(classes=None if classes is None else list(classes), **opts)
    else:
        dataset = builder(**opts)
    if classes is not None and not takes_classes:
        dataset = align_classes(dataset, list(classes))
    return dataset


def join_splits(datasets: Sequence[ImageDataset], name: str) -> ImageDataset:
    """One data set holding the records of ``datasets`` (splits of one data set with the same
    class list) in order; ``split`` becomes ``"a+b"`` and ``meta["joined"]`` keeps each part's
    split and metadata. An image listed in two parts is refused (the splits overlap)."""
    first = datasets[0]
    for d in datasets[1:]:
        if d.classnames != first.classnames:
            raise DataError(
                f"data set '{name}': splits '{first.split}' and '{d.split}' have different class lists; "
                "they cannot be joined"
            )
    records = [r for d in datasets for r in d.records]
    seen: set[str] = set()
    for path, _ in records:
        if path in seen:
            raise DataError(f"data set '{name}': the joined splits overlap ('{path}' is in two of them)")
        seen.add(path)
    out = first.subset(range(len(first)))
    out.records = records
    out.split = "+".join(str(d.split) for d in datasets)
    out.meta = {"joined": [{"split": d.split, **d.meta} for d in datasets]}
    out.skipped = [s for d in datasets for s in d.skipped]
    return out


def build_dataset(
    spec: str,
    classes: Sequence[str] | None = None,
    transform: Callable | None = None,
) -> ImageDataset:
    """Build a data set from a spec string such as ``eurosat:root=DIR,split=test``.

    Args:
        spec: ``NAME[:key=value,...]`` with NAME registered in ``DATASETS`` (``folder``,
            ``imagefolder``, ``csv``, ``eurosat``, ``dtd``, ...; see ``labelless list``). Every
            data set also takes ``limit=N``: a fixed random subset of N images (seed 0, kept in
            data set order), for quick runs. ``split=train+val`` joins splits (LaTTe-CLIP trains
            on CoOp's train + val), in the order given.
        classes: class names (e.g. from :func:`parse_classes`). Required for the unlabelled
            ``folder``; for a labelled data set they must be exactly its class names, in any
            order, and then define the label order.
        transform: applied to each RGB ``PIL.Image``.

    Raises:
        DataError: bad options, missing folders or files, class mismatch.
    """
    name, opts = parse_spec(spec, "data set spec")
    builder = DATASETS.get(name)
    _check_options(name, builder, opts)
    limit = opts.pop("limit", None)
    for key in ("root", "path"):  # relative: under the data root (--data-root / $LABELLESS_DATA)
        if key in opts:
            opts[key] = resolve_data_path(opts[key])
    parts = str(opts.get("split", "")).split("+")
    if len(parts) > 1:  # split=train+val: the union of the splits, in that order
        if any(not p for p in parts) or len(set(parts)) < len(parts):
            raise DataError(
                f"data set '{name}': split='{opts['split']}' must name distinct splits joined by '+', "
                "e.g. split=train+val"
            )
        dataset = join_splits([_build_one(builder, {**opts, "split": p}, classes) for p in parts], name)
    else:
        dataset = _build_one(builder, opts, classes)
    if limit is not None:
        dataset = _limit(dataset, name, limit)
    if transform is not None:
        dataset = dataset.with_transform(transform)
    dataset.meta.setdefault("spec", spec)
    return dataset


__all__ = [
    "BENCHMARKS",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "NAME_MODES",
    "RESISC45_CLASSNAMES",
    "UNKNOWN",
    "Benchmark",
    "CorruptImageError",
    "ImageDataset",
    "ImageTooLargeError",
    "Sample",
    "align_classes",
    "build_dataset",
    "join_splits",
    "check_classnames",
    "check_missing",
    "load_rgb",
    "normalize_classname",
    "parse_classes",
    "read_zhou_split",
    "resisc45_classname",
    "scan_images",
    "to_rgb",
]
