"""Image data sets from records ``(path, label)``, and the folder / CSV builders.

:class:`ImageDataset` is the one data-set type of labelless: every builder (plain folders,
folder-per-class trees, CSV files, the CoOp benchmarks) reduces its input to a list of
``(path, label)`` records plus the ordered class names. Label ``-1`` means unknown.
"""

from __future__ import annotations

import copy
import csv as _csv
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils.data import Dataset

from labelless.data.classes import NAME_MODES, check_classnames, normalize_classname
from labelless.data.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    CorruptImageError,
    load_rgb,
    scan_images,
)
from labelless.errors import DataError, did_you_mean
from labelless.registry import DATASETS

log = logging.getLogger(__name__)

UNKNOWN = -1
MISSING_MODES = ("error", "skip")


class Sample(NamedTuple):
    """One image of a data set, untransformed or transformed."""

    image: Any
    label: int
    path: str
    index: int


class ImageDataset(Dataset):
    """A list of ``(path, label)`` records with ordered class names and a transform.

    ``dataset[i]`` returns ``{"image": transform(img), "label": int, "index": i}`` (a dict, so
    ``default_collate`` batches it); :meth:`sample` returns a :class:`Sample` with the path.

    Attributes:
        records: list of ``(path, label)``; label ``-1`` = unknown.
        classnames: class names in label order.
        transform: callable applied to the RGB ``PIL.Image`` (``None`` = return the image).
        name, split, root: where the data came from (for results and cache keys).
        meta: builder-specific provenance (split file, generated-split seed, ...).
        skipped: ``(path, reason)`` of images dropped by :meth:`validate` or by the builder.
        max_pixels, max_side: passed to :func:`~labelless.data.images.load_rgb`.
    """

    def __init__(
        self,
        records: Sequence[tuple[str, int]],
        classnames: Sequence[str],
        transform: Callable | None = None,
        *,
        name: str = "custom",
        split: str | None = None,
        root: str | None = None,
        meta: dict | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        max_side: int | None = None,
    ):
        self.records: list[tuple[str, int]] = [(str(p), int(y)) for p, y in records]
        self.classnames: list[str] = list(classnames)
        self.transform = transform
        self.name = name
        self.split = split
        self.root = None if root is None else str(root)
        self.meta: dict = dict(meta or {})
        self.skipped: list[tuple[str, str]] = []
        self.max_pixels = max_pixels
        self.max_side = max_side
        k = len(self.classnames)
        bad = [(p, y) for p, y in self.records if not (y == UNKNOWN or 0 <= y < k)]
        if bad:
            p, y = bad[0]
            raise DataError(
                f"data set '{name}': {len(bad)} label(s) outside 0..{k - 1} "
                f"(first: label {y} for '{p}'); the class list has {k} classes"
            )

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        path, label = self.records[index]
        img = load_rgb(path, max_pixels=self.max_pixels, max_side=self.max_side)
        image = self.transform(img) if self.transform is not None else img
        return {"image": image, "label": label, "index": index}

    def sample(self, index: int) -> Sample:
        """The item at ``index`` as a :class:`Sample` (transformed image, label, path, index)."""
        item = self[index]
        return Sample(item["image"], item["label"], self.records[index][0], index)

    @property
    def paths(self) -> list[str]:
        """Image paths in data-set order."""
        return [p for p, _ in self.records]

    @property
    def labels(self) -> torch.Tensor:
        """Labels as a ``LongTensor`` of shape ``(N,)``; ``-1`` = unknown."""
        return torch.tensor([y for _, y in self.records], dtype=torch.long)

    @property
    def has_labels(self) -> bool:
        """True if every image has a known label (and there is at least one image)."""
        return bool(self.records) and all(y != UNKNOWN for _, y in self.records)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def with_transform(self, transform: Callable | None) -> ImageDataset:
        """A shallow copy that applies ``transform`` instead (records are shared, not copied)."""
        out = copy.copy(self)
        out.transform = transform
        return out

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageDataset:
        """A new data set with the records at ``indices`` (in that order), same metadata."""
        if isinstance(indices, torch.Tensor):
            indices = indices.tolist()
        out = copy.copy(self)
        out.records = [self.records[int(i)] for i in indices]
        out.meta = dict(self.meta)
        out.skipped = list(self.skipped)
        return out

    def validate(self, num_workers: int = 0, progress: bool = True) -> ImageDataset:
        """Decode every image once and drop the unreadable ones.

        The dropped images are appended to :attr:`skipped` as ``(path, reason)``; indices are
        renumbered. Threads are used for ``num_workers > 0`` (Pillow decodes without the GIL).
        Returns ``self`` for chaining.
        """
        from tqdm.auto import tqdm

        def check(record: tuple[str, int]) -> str | None:
            try:
                load_rgb(record[0], max_pixels=self.max_pixels, max_side=self.max_side)
            except CorruptImageError as e:
                return e.reason
            return None

        desc = f"checking {self.name}" + (f"/{self.split}" if self.split else "")
        bar = dict(total=len(self.records), desc=desc, disable=not progress, unit="img")
        if num_workers > 0:
            with ThreadPoolExecutor(num_workers) as pool:
                reasons = list(tqdm(pool.map(check, self.records), **bar))
        else:
            reasons = [check(r) for r in tqdm(self.records, **bar)]
        bad = [(r[0], why) for r, why in zip(self.records, reasons) if why is not None]
        if bad:
            # Rebind instead of mutating: copies made by with_transform keep their records.
            self.records = [r for r, why in zip(self.records, reasons) if why is None]
            self.skipped = self.skipped + bad
            log.warning(
                f"data set '{self.name}': skipped {len(bad)} unreadable image(s), "
                f"e.g. {bad[0][0]} ({bad[0][1]}); see dataset.skipped"
            )
        return self

    def fingerprint(self, stat: bool = True) -> str:
        """A short hash of the image identities (paths, labels, and file size + mtime).

        Meant for feature-cache keys: it changes when an image is added, removed, relabelled
        or rewritten.
        """
        h = hashlib.sha256()
        for path, label in self.records:
            h.update(f"{path}\0{label}\0".encode())
            if stat:
                try:
                    st = os.stat(path)
                    h.update(f"{st.st_size}\0{st.st_mtime_ns}\0".encode())
                except OSError:
                    h.update(b"missing\0")
        h.update("\0".join(self.classnames).encode())
        return h.hexdigest()[:16]

    def class_counts(self) -> list[int]:
        """Number of images per class (unknown labels not counted)."""
        counts = [0] * len(self.classnames)
        for _, y in self.records:
            if y != UNKNOWN:
                counts[y] += 1
        return counts

    def __repr__(self) -> str:
        split = f", split={self.split!r}" if self.split else ""
        return (
            f"ImageDataset(name={self.name!r}{split}, images={len(self)}, "
            f"classes={len(self.classnames)}, skipped={len(self.skipped)})"
        )


# --------------------------------------------------------------------------- helpers


def check_missing(
    records: list[tuple[str, int]], missing: str, source: str
) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
    """Split ``records`` into present ones and missing files per the ``missing`` option.

    ``missing=error`` raises a :class:`DataError` with the count and the first few paths;
    ``missing=skip`` warns with the count and returns the missing ones as skipped entries.
    """
    if missing not in MISSING_MODES:
        raise DataError(f"missing='{missing}' is not valid; use missing=error or missing=skip")
    absent = [r for r in records if not os.path.isfile(r[0])]
    if not absent:
        return records, []
    first = ", ".join(p for p, _ in absent[:3])
    if missing == "error":
        raise DataError(
            f"{len(absent)} of {len(records)} images listed in {source} do not exist "
            f"(first: {first}); check root=, or pass missing=skip to leave them out"
        )
    log.warning(
        f"{source}: skipping {len(absent)} of {len(records)} listed images that do not exist "
        f"(first: {first})"
    )
    absent_set = {p for p, _ in absent}
    kept = [r for r in records if r[0] not in absent_set]
    return kept, [(p, "file does not exist") for p, _ in absent]


def require_dir(path: str | os.PathLike | None, what: str, option: str = "root") -> Path:
    """``path`` as a :class:`Path` that is an existing folder, else a :class:`DataError`."""
    if path is None or str(path).strip() == "":
        raise DataError(f"{what}: no folder given; pass {option}=DIR")
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{what}: folder '{p}' does not exist; check {option}=")
    if not p.is_dir():
        raise DataError(f"{what}: '{p}' is not a folder; {option}= must name a folder")
    return p


def _no_images(root: Path, what: str) -> DataError:
    exts = " ".join(sorted(IMAGE_EXTENSIONS))
    return DataError(
        f"{what}: no images found under '{root}' (looked recursively for files ending in "
        f"{exts}, case-insensitive, hidden files skipped)"
    )


def align_classes(dataset: ImageDataset, classes: Sequence[str]) -> ImageDataset:
    """Reorder a labelled data set's labels to follow ``classes``.

    ``classes`` must hold exactly the data set's class names (any order); the labels are
    remapped so that ``classes[y]`` is the name of label ``y``.

    Raises:
        DataError: naming the classes missing from either side.
    """
    classes = list(classes)
    if classes == dataset.classnames:
        return dataset
    ours, theirs = set(dataset.classnames), set(classes)
    if ours != theirs or len(classes) != len(dataset.classnames):
        extra = [c for c in classes if c not in ours]
        lacking = [c for c in dataset.classnames if c not in theirs]
        hints = "".join(
            f"\n  '{c}' is not a class of the data set.{did_you_mean(c, lacking)}"
            for c in extra[:5]
        )
        fixes = [
            m
            for m in ("underscores", "lower")
            if {normalize_classname(c, m) for c in dataset.classnames} == theirs
        ]
        advice = (
            f"The option names={fixes[0]} in the data set spec would make them match."
            if fixes
            else "Leave out --classes to use the data set's own names, or fix the class list."
        )
        raise DataError(
            f"the given classes do not match the {len(dataset.classnames)} classes of data set "
            f"'{dataset.name}': {len(extra)} given class(es) are not in it"
            f"{' (' + ', '.join(map(repr, extra[:5])) + ')' if extra else ''}, and "
            f"{len(lacking)} of its classes are not given"
            f"{' (' + ', '.join(map(repr, lacking[:5])) + ')' if lacking else ''}.{hints}\n"
            f"{advice}"
        )
    new_index = {c: i for i, c in enumerate(classes)}
    remap = [new_index[c] for c in dataset.classnames]
    out = copy.copy(dataset)
    out.records = [(p, remap[y] if y != UNKNOWN else UNKNOWN) for p, y in dataset.records]
    out.classnames = classes
    out.meta = dict(dataset.meta, class_order="given")
    return out


def check_names_mode(names: str) -> str:
    """``names`` if it is a valid class-name mode, else a :class:`DataError`."""
    if names not in NAME_MODES:
        raise DataError(f"names='{names}' is not valid; use one of: {', '.join(NAME_MODES)}")
    return names


# --------------------------------------------------------------------------- builders


@DATASETS.register("folder")
def folder(root: str | None = None, classes: Sequence[str] | None = None) -> ImageDataset:
    """Unlabelled images under root= (recursive); class names come from --classes.

    ``folder:root=DIR``. Every image gets label -1.
    """
    path = require_dir(root, "data set 'folder'")
    if classes is None:
        raise DataError(
            f"data set 'folder:root={root}' has no labels and so no class names; "
            "pass --classes (a .txt/.json file or 'cat,dog,...')"
        )
    classes = check_classnames(list(classes), "--classes")
    files = scan_images(path)
    if not files:
        raise _no_images(path, "data set 'folder'")
    records = [(str(f), UNKNOWN) for f in files]
    return ImageDataset(records, classes, name="folder", root=str(path), meta={"labelled": False})


@DATASETS.register("imagefolder")
def imagefolder(root: str | None = None, names: str = "none") -> ImageDataset:
    """Labelled images, one sub-folder per class (class names = folder names).

    ``imagefolder:root=DIR[,names=none|lower|underscores]``; ``names=underscores`` turns
    ``commercial_area`` into ``commercial area``. Images are found recursively in each class
    folder; classes are sorted by folder name.
    """
    path = require_dir(root, "data set 'imagefolder'")
    check_names_mode(names)
    class_dirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"data set 'imagefolder': '{path}' has no class sub-folders; put each class's "
            "images in root/<class>/, or use folder:root=DIR for unlabelled images"
        )
    loose = [f for f in path.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS]
    if loose:
        log.warning(
            f"imagefolder '{path}': ignoring {len(loose)} image(s) directly in root "
            "(not in a class folder)"
        )
    classnames = [normalize_classname(d.name, names) for d in class_dirs]
    check_classnames(classnames, f"the class folders of '{path}' (names={names})")
    records: list[tuple[str, int]] = []
    empty: list[str] = []
    for label, d in enumerate(class_dirs):
        files = scan_images(d)
        if not files:
            empty.append(d.name)
        records.extend((str(f), label) for f in files)
    if empty:
        if len(empty) == len(class_dirs):
            raise _no_images(path, "data set 'imagefolder'")
        raise DataError(
            f"data set 'imagefolder': {len(empty)} class folder(s) under '{path}' hold no "
            f"images: {', '.join(empty[:10])}; remove them or add images "
            f"(extensions: {' '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    return ImageDataset(
        records, classnames, name="imagefolder", root=str(path), meta={"names": names}
    )


def _parse_label(value: str, classes: list[str] | None, where: str) -> int | str:
    value = value.strip()
    if value == "":
        return UNKNOWN
    if classes is not None:
        if value in classes:
            return classes.index(value)
        try:
            idx = int(value)
        except ValueError:
            raise DataError(
                f"{where}: label '{value}' is not one of the {len(classes)} classes."
                f"{did_you_mean(value, classes)} Fix the label or the class list."
            ) from None
        if not 0 <= idx < len(classes):
            raise DataError(
                f"{where}: label index {idx} is outside 0..{len(classes) - 1} "
                f"({len(classes)} classes given)"
            )
        return idx
    return value


@DATASETS.register("csv")
def csv(
    path: str | None = None,
    root: str | None = None,
    classes: Sequence[str] | None = None,
    missing: str = "error",
) -> ImageDataset:
    """Images listed in a CSV file with a header and columns path,label.

    ``csv:path=F[,root=DIR][,missing=error|skip]``. Relative image paths are resolved against
    root= (default: the CSV's folder). A label is a class name or a 0-based index into
    --classes; an empty label means unknown. Without --classes the class names are the
    distinct label names, sorted.
    """
    if path is None:
        raise DataError("data set 'csv': no file given; pass csv:path=FILE.csv")
    csv_path = Path(path).expanduser()
    if not csv_path.is_file():
        raise DataError(f"data set 'csv': file '{csv_path}' does not exist; check path=")
    base = require_dir(root, "data set 'csv'") if root is not None else csv_path.parent
    given = None if classes is None else check_classnames(list(classes), "--classes")
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = _csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        lacking = [c for c in ("path", "label") if c not in header]
        if lacking:
            raise DataError(
                f"CSV '{csv_path}' lacks column(s) {', '.join(lacking)} (header: "
                f"{','.join(header) or 'none'}); the first line must be a header with "
                "columns path,label"
            )
        raw: list[tuple[str, int | str]] = []
        for lineno, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "") for k, v in row.items()}
            where = f"CSV '{csv_path}' line {lineno}"
            rel = row["path"].strip()
            if not rel:
                raise DataError(f"{where}: empty path")
            raw.append((str(base / rel), _parse_label(row["label"], given, where)))
    if not raw:
        raise DataError(f"CSV '{csv_path}' lists no images")
    if given is not None:
        classnames = given
        records = [(p, int(y)) for p, y in raw]
    else:
        named = sorted({y for _, y in raw if isinstance(y, str)})
        if not named:
            raise DataError(
                f"CSV '{csv_path}' has no label names (only indices or empty labels); "
                "pass --classes so the labels can be named"
            )
        numeric = [y for _, y in raw if isinstance(y, str) and y.lstrip("-").isdigit()]
        if numeric and len(numeric) == sum(isinstance(y, str) for _, y in raw):
            raise DataError(
                f"CSV '{csv_path}' labels are indices ({numeric[0]}, ...); pass --classes "
                "so the indices can be named"
            )
        index = {c: i for i, c in enumerate(named)}
        classnames = named
        records = [(p, index[y] if isinstance(y, str) else int(y)) for p, y in raw]
    records, skipped = check_missing(records, missing, f"CSV '{csv_path}'")
    ds = ImageDataset(records, classnames, name="csv", root=str(base), meta={"csv": str(csv_path)})
    ds.skipped = skipped
    return ds
