"""User-facing errors.

Every problem caused by the user's input (a missing folder, an unknown backbone, a description
file that lacks classes, ...) raises a :class:`LabellessError` whose message names the bad input
and says what to do. The CLI prints the message and exits with status 2 instead of a traceback;
anything else that escapes is a bug in labelless.
"""

from __future__ import annotations

import difflib


class LabellessError(Exception):
    """An error caused by user input; its message is shown to the user as is."""


class ConfigError(LabellessError):
    """A bad configuration value, recipe file or ``--set`` override."""


class DataError(LabellessError):
    """A bad data set, image folder, split file or class list."""


class TextSourceError(LabellessError):
    """A bad text source: description JSON, template list, caption file."""


class BackboneError(LabellessError):
    """A backbone that cannot be built or loaded."""


class UnknownNameError(LabellessError):
    """A name that is not in a registry."""


def close_matches(name: str, choices, n: int = 3) -> list[str]:
    """Up to ``n`` entries of ``choices`` that look like ``name`` (case-insensitive)."""
    lowered = {str(c).lower(): str(c) for c in choices}
    hits = difflib.get_close_matches(str(name).lower(), list(lowered), n=n, cutoff=0.6)
    return [lowered[h] for h in hits]


def did_you_mean(name: str, choices) -> str:
    """`` Did you mean 'x'?`` or an empty string."""
    hits = close_matches(name, choices, n=1)
    return f" Did you mean '{hits[0]}'?" if hits else ""
