"""Registered, versioned class-description files, fetched on first use.

``descriptions:name=cupl/oxford_pets`` names a description file published by a paper's
repository (CuPL's, WCA's), pinned to a commit and a SHA-256 (``description_sets.json``). The
first use downloads it into the cache (``$LABELLESS_CACHE/texts``, checked against the
checksum); later uses read the cached copy. Offline, either point
``$LABELLESS_TEXT_MIRROR`` at a local mirror folder, which holds every file at the set's
``mirror_path`` (``cupl/all_prompts/full_prompts/pets_prompts_full.json``: the source, then the
path inside its repository), or pass a plain file with ``descriptions:path=FILE``.

A file whose checksum differs from the registered one is never used: a changed upstream file
(or a corrupt download) is an error that names both digests, not a silent change of the texts.
"""

from __future__ import annotations

import json
import os
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from labelless.errors import TextSourceError, did_you_mean
from labelless.utils.io import atomic_write_bytes, sha256_file

MIRROR_ENV = "LABELLESS_TEXT_MIRROR"


@dataclass(frozen=True)
class DescriptionSet:
    """One registered description file.

    name: ``SOURCE/DATASET``, e.g. ``cupl/dtd``.
    url: the raw file at a pinned commit of the source repository.
    sha256: the file's digest (the version: a different file is a different set).
    mirror_path: where a mirror folder holds it.
    repo, commit: provenance. about: what the file is.
    """

    name: str
    url: str
    sha256: str
    mirror_path: str
    repo: str
    commit: str
    about: str = ""


@lru_cache(maxsize=1)
def description_sets() -> dict[str, DescriptionSet]:
    """Every registered set by name (from the packaged ``description_sets.json``)."""
    raw = json.loads((resources.files("labelless.text") / "description_sets.json").read_text("utf-8"))
    fields = DescriptionSet.__dataclass_fields__
    return {name: DescriptionSet(name=name, **{k: v for k, v in d.items() if k in fields})
            for name, d in raw["sets"].items()}


def _cache_root() -> Path:
    from labelless.utils.paths import default_cache_dir

    return default_cache_dir() / "texts"


def _checked(path: Path, ds: DescriptionSet, origin: str) -> Path:
    digest = sha256_file(path)
    if digest != ds.sha256:
        raise TextSourceError(
            f"description set '{ds.name}': {origin} '{path}' has sha256 {digest}, but the "
            f"registered file ({ds.repo} @ {ds.commit[:7]}) has {ds.sha256}. Use the registered "
            "file, or pass your own with descriptions:path=FILE"
        )
    return path


def fetch_description_set(name: str) -> Path:
    """The local path of the registered set ``name``: from ``$LABELLESS_TEXT_MIRROR``, else the
    cache, else downloaded into the cache; always checksum-verified."""
    sets = description_sets()
    if name not in sets:
        raise TextSourceError(
            f"unknown description set '{name}'.{did_you_mean(name, sets)} Registered: "
            f"{', '.join(sorted(sets))}. For another file use descriptions:path=FILE"
        )
    ds = sets[name]
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        p = Path(mirror).expanduser() / ds.mirror_path
        if not p.is_file():
            raise TextSourceError(
                f"description set '{name}': ${MIRROR_ENV} is '{mirror}', but '{p}' does not exist "
                f"(a mirror holds each set at its mirror_path, here '{ds.mirror_path}')"
            )
        return _checked(p, ds, "the mirror file")
    cached = _cache_root() / ds.sha256[:16] / Path(ds.mirror_path).name
    if cached.is_file():
        return _checked(cached, ds, "the cached file")
    try:
        with urllib.request.urlopen(ds.url, timeout=60) as r:  # noqa: S310 - a pinned https URL
            data = r.read()
    except OSError as e:
        raise TextSourceError(
            f"description set '{name}': could not download {ds.url} ({e}). Offline, set "
            f"${MIRROR_ENV} to a folder holding '{ds.mirror_path}', or pass the file with "
            "descriptions:path=FILE"
        ) from None
    tmp = cached.with_name(cached.name + ".download")
    atomic_write_bytes(tmp, data)
    try:
        _checked(tmp, ds, "the downloaded file")
    except TextSourceError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, cached)
    return cached


__all__ = ["MIRROR_ENV", "DescriptionSet", "description_sets", "fetch_description_set"]
