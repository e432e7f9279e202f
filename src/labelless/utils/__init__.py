"""Small shared utilities (atomic file writes, hashing)."""

from labelless.utils.io import (
    atomic_save,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    sha256_file,
    stable_hash,
)

__all__ = [
    "atomic_save",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "sha256_file",
    "stable_hash",
]
