"""The standard few-shot / zero-shot benchmarks in their CoOp (Dassl) layouts.

Most benchmarks are read with CoOp's ``split_zhou_<Name>.json`` (keys ``train``/``val``/
``test``, entries ``[relative_path, label, classname]``), which also carries the
prompt-friendly class names used across the literature (EuroSAT ``Annual Crop Land``).
FGVC Aircraft uses the official ``images_variant_*.txt`` files as CoOp does, CUB its own
``CUB_200_2011`` index files, and RESISC45 (which has no CoOp split) a folder per class with an
optional split JSON or a seeded, recorded 60/20/20 split.

Spec: ``NAME:root=DIR[,split=train|val|test|train+val][,split_file=F][,missing=error|skip][,names=...]``
with ``root`` the data set's folder (e.g. ``eurosat:root=data/eurosat``).
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

from labelless.data.classes import NAME_MODES, check_classnames, normalize_classname
from labelless.data.folders import (
    ImageDataset,
    check_missing,
    check_names_mode,
    require_dir,
)
from labelless.data.images import scan_images
from labelless.errors import DataError
from labelless.registry import DATASETS

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Benchmark:
    """Where a benchmark's images and split file live, relative to its root folder."""

    name: str
    title: str
    layout: str  # "zhou" | "aircraft" | "cub" | "resisc45"
    image_dir: str = ""
    split_file: str | None = None
    splits: tuple[str, ...] = SPLITS


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark("eurosat", "EuroSAT", "zhou", "2750", "split_zhou_EuroSAT.json"),
        Benchmark(
            "dtd", "Describable Textures", "zhou", "images", "split_zhou_DescribableTextures.json"
        ),
        Benchmark(
            "oxford_flowers", "Oxford Flowers-102", "zhou", "jpg", "split_zhou_OxfordFlowers.json"
        ),
        Benchmark(
            "oxford_pets", "Oxford-IIIT Pets", "zhou", "images", "split_zhou_OxfordPets.json"
        ),
        Benchmark(
            "caltech101",
            "Caltech-101",
            "zhou",
            "101_ObjectCategories",
            "split_zhou_Caltech101.json",
        ),
        # CoOp's split paths for Cars already start with cars_train/ or cars_test/.
        Benchmark("stanford_cars", "Stanford Cars", "zhou", "", "split_zhou_StanfordCars.json"),
        Benchmark(
            "ucf101",
            "UCF101 (middle frames)",
            "zhou",
            "UCF-101-midframes",
            "split_zhou_UCF101.json",
        ),
        Benchmark("food101", "Food-101", "zhou", "images", "split_zhou_Food101.json"),
        Benchmark("sun397", "SUN397", "zhou", "SUN397", "split_zhou_SUN397.json"),
        Benchmark("fgvc_aircraft", "FGVC Aircraft (variants)", "aircraft", "images"),
        Benchmark("cub", "CUB-200-2011", "cub", "images", splits=("train", "test")),
        Benchmark("resisc45", "NWPU-RESISC45", "resisc45", "images"),
    ]
}

# Folder names of the 45 RESISC45 classes -> the names used in prompts.
RESISC45_CLASSNAMES: dict[str, str] = {
    "airplane": "airplane",
    "airport": "airport",
    "baseball_diamond": "baseball diamond",
    "basketball_court": "basketball court",
    "beach": "beach",
    "bridge": "bridge",
    "chaparral": "chaparral",
    "church": "church",
    "circular_farmland": "circular farmland",
    "cloud": "cloud",
    "commercial_area": "commercial area",
    "dense_residential": "dense residential",
    "desert": "desert",
    "forest": "forest",
    "freeway": "freeway",
    "golf_course": "golf course",
    "ground_track_field": "ground track field",
    "harbor": "harbor",
    "industrial_area": "industrial area",
    "intersection": "intersection",
    "island": "island",
    "lake": "lake",
    "meadow": "meadow",
    "medium_residential": "medium residential",
    "mobile_home_park": "mobile home park",
    "mountain": "mountain",
    "overpass": "overpass",
    "palace": "palace",
    "parking_lot": "parking lot",
    "railway": "railway",
    "railway_station": "railway station",
    "rectangular_farmland": "rectangular farmland",
    "river": "river",
    "roundabout": "roundabout",
    "runway": "runway",
    "sea_ice": "sea ice",
    "ship": "ship",
    "snowberg": "snowberg",
    "sparse_residential": "sparse residential",
    "stadium": "stadium",
    "storage_tank": "storage tank",
    "tennis_court": "tennis court",
    "terrace": "terrace",
    "thermal_power_station": "thermal power station",
    "wetland": "wetland",
}

# Fractions of the generated RESISC45 split (per class), recorded in dataset.meta.
RESISC45_FRACTIONS = (0.6, 0.2, 0.2)


def _check_split(bench: Benchmark, split: str) -> str:
    if split not in bench.splits:
        extra = f" ({bench.title} has no '{split}' split)" if split in SPLITS else ""
        raise DataError(
            f"data set '{bench.name}': split='{split}' is not valid{extra}; "
            f"use one of: {', '.join(bench.splits)}"
        )
    return split


def _root(bench: Benchmark, root: str | None) -> Path:
    if root is None or not str(root).strip():
        raise DataError(
            f"data set '{bench.name}' needs its folder: pass {bench.name}:root=DIR "
            f"(the folder that holds {bench.image_dir + '/' if bench.image_dir else 'the images'}"
            f"{' and ' + bench.split_file if bench.split_file else ''})"
        )
    return require_dir(root, f"data set '{bench.name}'")


def _load_json(path: Path, what: str):
    if not path.is_file():
        raise DataError(f"{what} '{path}' does not exist; pass split_file=F or fix root=")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{what} '{path}' is not valid JSON: {e}") from e


def _flowers_names(root: Path) -> dict[int, str]:
    """Flowers' ``cat_to_name.json`` (1-based keys) as 0-based label -> name, if present."""
    for name in ("cat_to_name.json", "cat_to_name_oxford_flowers.json"):
        p = root / name
        if p.is_file():
            data = _load_json(p, "Flowers class-name file")
            return {int(k) - 1: str(v) for k, v in data.items()}
    return {}


def read_zhou_split(
    split_file: str | Path,
    image_dir: str | Path,
    split: str = "test",
    *,
    name: str = "custom",
    names: str = "none",
    missing: str = "error",
    fallback_names: dict[int, str] | None = None,
) -> ImageDataset:
    """Read one split of a CoOp ``split_zhou_*.json`` file.

    Class names are taken from the entries of all splits (so a class is named even if the
    chosen split lacks it), in label order; ``fallback_names`` fills labels no entry names.

    Raises:
        DataError: bad JSON structure, inconsistent or missing class names, missing images
            (unless ``missing=skip``).
    """
    split_file = Path(split_file)
    data = _load_json(split_file, "split file")
    if not isinstance(data, dict) or split not in data:
        keys = ", ".join(data) if isinstance(data, dict) else type(data).__name__
        raise DataError(
            f"split file '{split_file}' has no '{split}' split (found: {keys}); a CoOp split "
            "file is a JSON object with train/val/test lists"
        )
    label_names: dict[int, str] = {}
    for key, entries in data.items():
        if not isinstance(entries, list):
            raise DataError(f"split file '{split_file}': '{key}' is not a list of entries")
        for entry in entries:
            if not (isinstance(entry, (list, tuple)) and len(entry) == 3):
                raise DataError(
                    f"split file '{split_file}': entry {entry!r} in '{key}' is not "
                    "[relative_path, label, classname]"
                )
            _, label, cname = entry
            label = int(label)
            if label_names.setdefault(label, str(cname)) != str(cname):
                raise DataError(
                    f"split file '{split_file}': label {label} is named both "
                    f"'{label_names[label]}' and '{cname}'"
                )
    fallback = fallback_names or {}
    num = max(label_names) + 1 if label_names else 0
    unnamed = [i for i in range(num) if i not in label_names and i not in fallback]
    if unnamed:
        raise DataError(
            f"split file '{split_file}' names no class for label(s) {unnamed[:10]}; "
            "labels must run 0..K-1 with a name for each"
        )
    classnames = [
        normalize_classname(label_names.get(i, fallback.get(i, "")), names) for i in range(num)
    ]
    check_classnames(classnames, f"split file '{split_file}' (names={names})")
    image_dir = Path(image_dir)
    records = [(str(image_dir / rel), int(label)) for rel, label, _ in data[split]]
    records, skipped = check_missing(records, missing, f"split file '{split_file}' ({split})")
    ds = ImageDataset(
        records,
        classnames,
        name=name,
        split=split,
        root=str(image_dir),
        meta={"split_file": str(split_file), "split_source": "file", "names": names},
    )
    ds.skipped = skipped
    return ds


def _zhou_builder(bench: Benchmark):
    def build(
        root: str | None = None,
        split: str = "test",
        split_file: str | None = None,
        missing: str = "error",
        names: str = "none",
    ) -> ImageDataset:
        base = _root(bench, root)
        _check_split(bench, split)
        check_names_mode(names)
        sf = Path(split_file).expanduser() if split_file else base / bench.split_file
        fallback = _flowers_names(base) if bench.name == "oxford_flowers" else None
        return read_zhou_split(
            sf,
            base / bench.image_dir,
            split,
            name=bench.name,
            names=names,
            missing=missing,
            fallback_names=fallback,
        )

    build.__name__ = bench.name
    build.__doc__ = (
        f"{bench.title} (CoOp layout: {bench.image_dir or '.'}/ + {bench.split_file}).\n\n"
        f"``{bench.name}:root=DIR[,split=train|val|test][,split_file=F]"
        "[,missing=error|skip][,names=none|lower|underscores]``; split defaults to test."
    )
    return build


for _bench in BENCHMARKS.values():
    if _bench.layout == "zhou":
        DATASETS.register(_bench.name, _zhou_builder(_bench))


def _read_lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise DataError(f"{what} '{path}' does not exist; check root=")
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


@DATASETS.register("fgvc_aircraft")
def fgvc_aircraft(
    root: str | None = None,
    split: str = "test",
    missing: str = "error",
    names: str = "none",
) -> ImageDataset:
    """FGVC Aircraft, 100 variants (CoOp layout: images/ + variants.txt + images_variant_*.txt).

    ``fgvc_aircraft:root=DIR[,split=train|val|test][,missing=error|skip]``; root is the
    folder holding ``images/`` and the txt files (``fgvc-aircraft-2013b/data`` originally).
    """
    bench = BENCHMARKS["fgvc_aircraft"]
    base = _root(bench, root)
    _check_split(bench, split)
    check_names_mode(names)
    variants = _read_lines(base / "variants.txt", "FGVC Aircraft class file")
    index = {v: i for i, v in enumerate(variants)}
    list_file = base / f"images_variant_{split}.txt"
    records = []
    for line in _read_lines(list_file, "FGVC Aircraft split file"):
        image_id, _, variant = line.partition(" ")
        if variant not in index:
            raise DataError(
                f"'{list_file}': variant '{variant}' (image {image_id}) is not in variants.txt"
            )
        records.append((str(base / "images" / f"{image_id}.jpg"), index[variant]))
    classnames = [normalize_classname(v, names) for v in variants]
    check_classnames(classnames, f"'{base / 'variants.txt'}' (names={names})")
    records, skipped = check_missing(records, missing, f"'{list_file}'")
    ds = ImageDataset(
        records,
        classnames,
        name=bench.name,
        split=split,
        root=str(base / "images"),
        meta={"split_file": str(list_file), "split_source": "file", "names": names},
    )
    ds.skipped = skipped
    return ds


def _index_file(path: Path) -> dict[int, str]:
    """``"<id> <value>"`` lines (CUB's index files) as ``{id: value}``."""
    out = {}
    for line in _read_lines(path, "CUB index file"):
        key, _, value = line.partition(" ")
        try:
            out[int(key)] = value.strip()
        except ValueError:
            raise DataError(f"CUB index file '{path}': bad line '{line}'") from None
    return out


@DATASETS.register("cub")
def cub(
    root: str | None = None,
    split: str = "test",
    missing: str = "error",
    names: str = "none",
) -> ImageDataset:
    """CUB-200-2011 birds (CUB_200_2011 layout: images/ + images.txt, classes.txt, ...).

    ``cub:root=DIR[,split=train|test][,names=none|lower|underscores]``; root is the
    ``CUB_200_2011`` folder (or its parent) with images.txt, image_class_labels.txt,
    train_test_split.txt and classes.txt. There is no official val split. Class names are
    the folder names without the number prefix (``Black_footed_Albatross``).
    """
    bench = BENCHMARKS["cub"]
    base = _root(bench, root)
    if not (base / "images.txt").is_file() and (base / "CUB_200_2011" / "images.txt").is_file():
        base = base / "CUB_200_2011"
    if split == "val":
        raise DataError(
            "CUB-200-2011 has no val split (only train/test in train_test_split.txt); use "
            "split=train or split=test, or hold out part of train yourself"
        )
    _check_split(bench, split)
    check_names_mode(names)
    classes = _index_file(base / "classes.txt")  # 1-based id -> "001.Black_footed_Albatross"
    ids = sorted(classes)
    raw_names = [classes[i].split(".", 1)[-1] for i in ids]
    classnames = [normalize_classname(n, names) for n in raw_names]
    check_classnames(classnames, f"'{base / 'classes.txt'}' (names={names})")
    label_of_class = {cid: k for k, cid in enumerate(ids)}
    images = _index_file(base / "images.txt")
    is_train = _index_file(base / "train_test_split.txt")
    labels_file = base / "image_class_labels.txt"
    labels = _index_file(labels_file) if labels_file.is_file() else None
    folder_label = {classes[i]: label_of_class[i] for i in ids}
    want = "1" if split == "train" else "0"
    records = []
    for image_id in sorted(images):
        if is_train.get(image_id) != want:
            continue
        rel = images[image_id]
        if labels is not None:
            label = label_of_class[int(labels[image_id])]
        else:
            label = folder_label[rel.split("/", 1)[0]]
        records.append((str(base / "images" / rel), label))
    records, skipped = check_missing(records, missing, f"CUB '{base}' ({split})")
    ds = ImageDataset(
        records,
        classnames,
        name=bench.name,
        split=split,
        root=str(base / "images"),
        meta={
            "split_file": str(base / "train_test_split.txt"),
            "split_source": "file",
            "names": names,
        },
    )
    ds.skipped = skipped
    return ds


def resisc45_classname(folder: str) -> str:
    """Prompt-friendly name of a RESISC45 class folder (``commercial_area`` -> ``commercial area``)."""
    return RESISC45_CLASSNAMES.get(folder, normalize_classname(folder, "underscores"))


@DATASETS.register("resisc45")
def resisc45(
    root: str | None = None,
    split: str = "test",
    split_file: str | None = None,
    seed: str = "0",
    missing: str = "error",
    names: str = "prompt",
) -> ImageDataset:
    """NWPU-RESISC45 (a folder per class; optional split JSON, else a seeded 60/20/20 split).

    ``resisc45:root=DIR[,split=train|val|test][,split_file=F][,seed=0][,names=prompt|none|...]``.
    root is the folder of class folders, or its parent holding ``images/``. Without
    split_file= each class's images are shuffled with ``seed`` and cut 60/20/20 into
    train/val/test; the seed and fractions are recorded in ``dataset.meta``. ``names=prompt``
    maps folder names to prompt names (``commercial_area`` -> ``commercial area``).
    """
    bench = BENCHMARKS["resisc45"]
    base = _root(bench, root)
    _check_split(bench, split)
    if names != "prompt":
        check_names_mode(names)
    image_dir = base / "images" if (base / "images").is_dir() else base
    if split_file:
        ds = read_zhou_split(
            Path(split_file).expanduser(),
            image_dir,
            split,
            name=bench.name,
            names="none" if names == "prompt" else names,
            missing=missing,
        )
        return ds
    try:
        seed_int = int(seed)
    except ValueError:
        raise DataError(f"resisc45: seed='{seed}' is not an integer") from None
    class_dirs = sorted(d for d in image_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"resisc45: '{image_dir}' has no class folders; root= must hold <class>/ folders "
            "or an images/ folder of them"
        )
    unknown = [d.name for d in class_dirs if d.name not in RESISC45_CLASSNAMES]
    if unknown:
        log.warning(
            f"resisc45: folder(s) {', '.join(unknown[:5])} are not RESISC45 classes; "
            "kept as classes with '_' read as spaces"
        )
    if names == "prompt":
        classnames = [resisc45_classname(d.name) for d in class_dirs]
    else:
        classnames = [normalize_classname(d.name, names) for d in class_dirs]
    check_classnames(classnames, f"the class folders of '{image_dir}'")
    which = SPLITS.index(split)
    records: list[tuple[str, int]] = []
    counts = {}
    for label, d in enumerate(class_dirs):
        files = scan_images(d)
        # String seeds hash deterministically (sha512), unlike hash(); per class so adding a
        # class never reshuffles the others.
        order = list(range(len(files)))
        random.Random(f"resisc45:{seed_int}:{d.name}").shuffle(order)
        n_train = round(RESISC45_FRACTIONS[0] * len(files))
        n_val = round(RESISC45_FRACTIONS[1] * len(files))
        bounds = (0, n_train, n_train + n_val, len(files))
        chosen = sorted(order[bounds[which] : bounds[which + 1]])
        counts[d.name] = len(chosen)
        records.extend((str(files[i]), label) for i in chosen)
    if not records:
        raise DataError(f"resisc45: no images for split '{split}' under '{image_dir}'")
    return ImageDataset(
        records,
        classnames,
        name=bench.name,
        split=split,
        root=str(image_dir),
        meta={
            "split_source": "generated",
            "seed": seed_int,
            "fractions": list(RESISC45_FRACTIONS),
            "per_class": counts,
            "names": names,
        },
    )


__all__ = [
    "BENCHMARKS",
    "Benchmark",
    "NAME_MODES",
    "RESISC45_CLASSNAMES",
    "read_zhou_split",
    "resisc45_classname",
]
