"""The ``labelless`` logger: library code logs, the CLI decides where it goes.

Library modules use ``logging.getLogger(__name__)`` (all under ``labelless.``) and never
``print``; a Python user sees nothing unless they configure logging (``logging.basicConfig(
level=logging.INFO)``). The command line calls :func:`setup_cli_logging`: INFO lines (results
paths, metrics summaries, trainable-parameter reports) go to stdout as plain text, warnings and
errors to stderr as ``warning: ...`` / ``error: ...`` lines (no source file, no code line).
"""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "labelless"


class _Prefixed(logging.Formatter):
    """``warning: message`` / ``error: message``: how the CLI prints every problem."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {super().format(record)}"


class _Below(logging.Filter):
    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def setup_cli_logging(level: int = logging.INFO) -> logging.Logger:
    """Send the ``labelless`` logger's records to stdout (below WARNING) and stderr (the rest).

    Idempotent: handlers installed by an earlier call are replaced, not duplicated.
    """
    logger = logging.getLogger(LOGGER_NAME)
    for h in list(logger.handlers):
        if getattr(h, "_labelless_cli", False):
            logger.removeHandler(h)
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(_Below(logging.WARNING))
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    out.setFormatter(logging.Formatter("%(message)s"))
    err.setFormatter(_Prefixed("%(message)s"))
    for h in (out, err):
        h._labelless_cli = True  # type: ignore[attr-defined]
        logger.addHandler(h)
    logger.setLevel(level)
    logger.propagate = False  # the root logger's handlers (if any) would print twice
    return logger
