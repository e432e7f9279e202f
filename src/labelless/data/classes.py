"""Class-name lists: parsing ``--classes`` and explicit name normalisation.

Class names are the keys of every text source, so they are never altered behind the user's
back: folder names such as ``commercial_area`` stay as they are unless a normalisation mode is
asked for explicitly (``names=underscores`` in a data set spec).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from labelless.errors import ConfigError, DataError

NAME_MODES: tuple[str, ...] = ("none", "lower", "underscores")


def normalize_classname(name: str, mode: str = "none") -> str:
    """Normalise one class name.

    Modes: ``none`` (strip surrounding white space only), ``lower`` (also lower-case),
    ``underscores`` (also replace ``_`` by a space and collapse repeated spaces).
    """
    if mode not in NAME_MODES:
        raise ConfigError(f"unknown class-name mode '{mode}'; use one of: {', '.join(NAME_MODES)}")
    out = str(name).strip()
    if mode == "lower":
        out = out.lower()
    elif mode == "underscores":
        out = " ".join(out.replace("_", " ").split())
    return out


def check_classnames(names: list[str], source: str) -> list[str]:
    """Raise :class:`DataError` if ``names`` is empty, has blanks or has duplicates."""
    if not names:
        raise DataError(f"no class names in {source}; give at least one class")
    blank = [i for i, n in enumerate(names) if not n]
    if blank:
        raise DataError(f"empty class name at position(s) {blank[:5]} in {source}")
    dups = sorted(n for n, c in Counter(names).items() if c > 1)
    if dups:
        shown = ", ".join(repr(d) for d in dups[:10])
        raise DataError(f"duplicate class names in {source}: {shown}; every class must appear once")
    return names


def _looks_like_path(arg: str) -> bool:
    return "," not in arg and (
        arg.lower().endswith((".txt", ".json", ".csv")) or os.sep in arg or "/" in arg
    )


def _read_class_file(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"class file '{path}' is not valid JSON: {e}") from e
        if isinstance(data, dict):
            # {"0": "cat", "1": "dog"} (or 1-based, as Flowers' cat_to_name.json): index order.
            try:
                items = sorted(data.items(), key=lambda kv: int(kv[0]))
            except ValueError:
                raise DataError(
                    f"class file '{path}' is a JSON object whose keys are not integers; "
                    "give a JSON list of names or an {index: name} object"
                ) from None
            data = [v for _, v in items]
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise DataError(f"class file '{path}' must hold a JSON list of class-name strings")
        return list(data)
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def parse_classes(arg: str | list[str], normalize: str = "none") -> list[str]:
    """Class names from ``--classes``: a text file, a JSON file or a comma-separated list.

    * text file: one class per line; blank lines and lines starting with ``#`` are ignored;
    * JSON file: a list of names, or an ``{index: name}`` object (taken in index order);
    * otherwise: ``"cat,dog,bird"``.

    A list is accepted as is. Every name is normalised with :func:`normalize_classname`
    (``normalize`` mode, default ``none`` = strip only) before checking for duplicates.

    Raises:
        DataError: missing file, empty list, blank or duplicate names.
    """
    if isinstance(arg, (list, tuple)):
        names, source = [str(x) for x in arg], "the class list"
    else:
        arg = str(arg).strip()
        path = Path(arg).expanduser()
        if arg and path.is_file():
            names, source = _read_class_file(path), f"class file '{path}'"
        elif _looks_like_path(arg):
            raise DataError(
                f"class file '{arg}' does not exist; pass an existing .txt/.json file or a "
                "comma-separated list such as 'cat,dog'"
            )
        else:
            names, source = (arg.split(",") if arg else []), f"class list '{arg}'"
    names = [normalize_classname(n, normalize) for n in names]
    return check_classnames(names, source)
