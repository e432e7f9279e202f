"""Keep secrets (API keys) out of everything labelless shows, logs or writes.

A server may echo the request's ``Authorization`` header in an error body, and error texts end
up in messages, log lines and the reply cache. :func:`redact` removes every registered secret
(:func:`register_secret`, called with the API key a backend uses) and any value that follows an
``Authorization``/``api-key``/``Bearer`` marker, whatever the key.
"""

from __future__ import annotations

import re
import threading

MASK = "***"

_lock = threading.Lock()
_secrets: set[str] = set()

# "Authorization: Bearer X", "authorization": "X", 'api-key: X', "x-api-key=X", "api_key": "X"
_MARKED = re.compile(
    r"""(?ix)
    ( (?:authorization|(?:x-)?api[-_ ]?key) ["']? \s* [:=] \s* ["']? (?:bearer\s+|basic\s+)? )
    [^\s"',;}\]]+
    """
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{6,}")


def register_secret(value: str | None) -> None:
    """Remember ``value`` (an API key) so that :func:`redact` removes it from any text. Values
    shorter than 6 characters and the placeholder ``EMPTY`` are ignored (they would mask words)."""
    if value and len(value) >= 6 and value != "EMPTY":
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """``text`` with every registered secret and every Authorization/api-key/Bearer value
    replaced by ``***``."""
    text = str(text)
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for s in known:
        text = text.replace(s, MASK)
    text = _MARKED.sub(lambda m: m.group(1) + MASK, text)
    return _BEARER.sub(lambda m: m.group(1) + MASK, text)


__all__ = ["MASK", "redact", "register_secret"]
