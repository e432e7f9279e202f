"""Atomic file writes and stable hashing.

Every file labelless writes (results JSON, checkpoints, feature caches, plots) goes through
:func:`atomic_save` or one of its wrappers: the data is written to a temporary file in the same
directory, flushed to disk, and renamed over the target with :func:`os.replace`. A crash or an
exception half-way leaves the previous file intact instead of a truncated one, and a reader
never sees a partial file.

:func:`stable_hash` turns a nested config-like structure into a short hex digest that does not
depend on dict key order, process, platform or Python's hash seed; it is used for cache keys and
config hashes.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import os
import stat
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "sha256_file",
    "stable_hash",
]


def _fsync_dir(directory: Path) -> None:
    """Flush a directory entry to disk so a rename survives a power cut (best effort, POSIX)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Write ``path`` atomically: ``writer(tmp)`` fills a temporary file, which is then renamed.

    The temporary file lives in the same directory as ``path`` (so the rename is atomic) and keeps
    its suffix (``.png``, ``.safetensors``, ...) because some writers pick the format from it.
    Parent directories are created. If ``writer`` raises, the temporary file is removed, the
    exception propagates and any existing file at ``path`` is left untouched.

    Example: ``atomic_save(p, lambda tmp: torch.save(state, tmp))``.
    Returns ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}"
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        writer(tmp)
        # Re-open to fsync: the writer may have used its own file handle (torch.save, savefig).
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp creates mode 0600; keep the mode of the file being replaced, else rw-r--r--.
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically replace the contents of ``path`` with ``data``; returns the path."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_save(path, write)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Atomically replace the contents of ``path`` with ``text`` (UTF-8); returns the path."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Atomically write ``obj`` as JSON (UTF-8, trailing newline); returns the path.

    The object is serialised before anything is written, so an unserialisable object raises
    ``TypeError`` and leaves the existing file untouched.
    """
    text = json.dumps(obj, indent=indent, ensure_ascii=False) + "\n"
    return atomic_write_text(path, text)


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def _canonical(obj: Any) -> Any:
    """A JSON-serialisable, type-tagged canonical form of ``obj`` (see :func:`stable_hash`)."""
    # Scalars are tagged so that 1, 1.0, True and "1" never collide.
    if obj is None:
        return None
    if isinstance(obj, bool):
        return "b:" + ("1" if obj else "0")
    if isinstance(obj, enum.Enum):
        return _canonical(obj.value)
    if isinstance(obj, int):
        return f"i:{obj}"
    if isinstance(obj, float):
        return "f:" + ("nan" if math.isnan(obj) else repr(obj))
    if isinstance(obj, str):
        return "s:" + obj
    if isinstance(obj, os.PathLike):
        # A Path hashes like its string form: configs store paths as strings after to_dict().
        return "s:" + os.fspath(obj)
    if isinstance(obj, bytes):
        return "x:" + obj.hex()
    if isinstance(obj, Mapping):
        items = {}
        for k, v in obj.items():
            key = json.dumps(_canonical(k), ensure_ascii=True)
            if key in items:
                raise TypeError(
                    f"stable_hash: two keys of one dict have the same canonical form {key}"
                )
            items[key] = _canonical(v)
        return {"d": [[k, items[k]] for k in sorted(items)]}
    if isinstance(obj, (list, tuple)):
        return {"l": [_canonical(v) for v in obj]}
    if isinstance(obj, (set, frozenset)):
        parts = [_canonical(v) for v in obj]
        return {"set": sorted(parts, key=lambda p: json.dumps(p, sort_keys=True))}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
        return {"dc": type(obj).__name__, "f": _canonical(fields)}
    item = getattr(obj, "item", None)
    if callable(item) and getattr(obj, "shape", None) == ():
        # numpy / torch 0-d scalars behave like the Python number they hold.
        return _canonical(item())
    raise TypeError(
        f"stable_hash cannot hash a {type(obj).__name__}; pass dicts, lists, tuples, str, "
        "int, float, bool, None, Path or dataclasses of those"
    )


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex SHA-256 (first ``length`` chars) of a canonical JSON form of a nested structure.

    Accepts dicts, lists, tuples, sets, str, int, float, bool, None, bytes, paths, enums,
    dataclasses and 0-d numpy/torch scalars. Dict key order does not matter; everything else
    does. Floats are encoded with ``repr`` (exact round-trip), and values are type-tagged so
    ``1``, ``1.0``, ``True`` and ``"1"`` hash differently. A list and a tuple with the same items
    hash the same (both are sequences in JSON/YAML configs), and a ``Path`` hashes like its
    string. Raises ``TypeError`` for anything else rather than hashing an unstable ``repr``.
    """
    if not 1 <= length <= 64:
        raise ValueError(f"stable_hash length must be in 1..64, got {length}")
    text = json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:length]
