"""Cache location, config hashing and atomic directory publishing for the testbed.

Cached artefacts (the pre-trained checkpoint, the task folder) live under
``<cache>/testbed/<kind>/<hash>/`` where the hash covers every field of the configs that produced
them plus :data:`CODE_VERSION`, so a change to any knob, or to the generator code, produces a new
folder instead of silently reusing a stale one. A folder is built under a temporary name and
renamed into place, so readers never see a half-written artefact; concurrent builders of the
same folder wait on a lock file and reuse the first one's result.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

from labelless.config import to_dict
from labelless.utils.paths import default_cache_dir  # noqa: F401  (the one definition)

#: Bump when the world renderer, captioner, task builder or pre-training loop changes in a way
#: that changes their outputs; it is part of every cache key.
CODE_VERSION = "testbed-v1"


def config_hash(*configs: Any, version: str = CODE_VERSION, length: int = 16) -> str:
    """A short sha256 of the JSON of ``configs`` (dataclasses or plain data) and ``version``."""
    payload = json.dumps(
        {"version": version, "configs": [to_dict(c) for c in configs]}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


def publish_dir(final: Path, build: Callable[[Path], None]) -> bool:
    """Build a directory atomically: ``build(tmp)`` fills a temporary sibling of ``final``,
    which is then renamed to ``final``.

    Returns False (and builds nothing) if ``final`` already exists. Builders of the same
    ``final`` take an exclusive lock on ``.final.lock`` (``filelock``), so a second process
    waits for the first and then reuses its result instead of repeating minutes of work; a
    holder of the lock also removes temporary folders that killed builders left behind. Should
    two builders still race (a file system without locks), neither corrupts the other: the
    first rename wins.
    """
    final = Path(final)
    if final.exists():
        return False
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(final.parent / f".{final.name}.lock"):
        if final.exists():  # another process built it while we waited
            return False
        for stale in final.parent.glob(f".{final.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            build(tmp)
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.exists():
                    raise
                return False
            return True
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (UTF-8)."""
    Path(path).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
