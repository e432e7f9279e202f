"""A resumable on-disk cache of generated texts: one append-only JSONL file, fsynced per record.

Each line is ``{"key": K, "ok": true, "text": T}`` or ``{"key": K, "ok": false, "error": E}``.
Keys are digests of everything that changes a reply (image content hash, prompt, system
message, sample index, backend identity: model, endpoint, sampling settings), so an interrupted
run of 50k images resumes where it stopped and an image is never paid for twice, while a change
of model or prompt never reuses a stale text. A killed writer can leave at most one truncated
last line, which is ignored on reading. Failures are recorded (for the report) but do not count
as done: the next run retries them.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from labelless.utils.io import stable_hash
from labelless.utils.secrets import redact


def request_key(identity: dict[str, Any], prompt: str, images: list[str], system: str | None = None,
                sample: int = 0, extra: dict | None = None) -> str:
    """Cache key of one request: backend identity, prompt, system message, image content
    hashes (in order), sample index and any extra settings (e.g. collage geometry)."""
    return stable_hash(
        {"v": 1, "id": identity, "prompt": prompt, "system": system, "images": list(images),
         "sample": int(sample), "extra": extra or {}},
        length=32,
    )


class ReplyCache:
    """Append-only JSONL reply cache (thread-safe; one process writes at a time).

    >>> cache = ReplyCache("captions-cache.jsonl")
    >>> cache.get(key)            # None if not done yet
    >>> cache.put(key, "a red car")
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.done: dict[str, str] = {}
        self.failed: dict[str, str] = {}
        self.corrupt_lines = 0
        if self.path.exists():
            self._load()
        self._fh = open(self.path, "a", encoding="utf-8")
        if self._fh.tell() > 0 and not self._ends_with_newline():
            self._fh.write("\n")  # a writer killed mid-line left no newline: start a fresh line

    def _load(self) -> None:
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                    key = rec["key"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    self.corrupt_lines += 1  # a line cut by a kill mid-write
                    continue
                if rec.get("ok") and isinstance(rec.get("text"), str) and rec["text"].strip():
                    self.done[key] = rec["text"]
                    self.failed.pop(key, None)
                elif key not in self.done:
                    self.failed[key] = str(rec.get("error", "unknown error"))

    def get(self, key: str) -> str | None:
        return self.done.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self.done

    def _append(self, rec: dict) -> None:
        line = json.dumps(rec, ensure_ascii=False) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def put(self, key: str, text: str, **meta: Any) -> None:
        """Record a good reply (durable when this returns)."""
        self._append({"key": key, "ok": True, "text": text, **meta})
        with self._lock:
            self.done[key] = text
            self.failed.pop(key, None)

    def put_failure(self, key: str, error: str, **meta: Any) -> None:
        """Record a failed request (secrets redacted); it stays to-do for the next run."""
        error = redact(error)
        self._append({"key": key, "ok": False, "error": error, **meta})
        with self._lock:
            self.failed[key] = error

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()

    def __enter__(self) -> ReplyCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
