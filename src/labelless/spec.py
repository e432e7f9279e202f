"""Spec strings: ``name:key=value,key=value``.

Data sets, text sources and views are chosen on the command line by such strings, e.g.
``eurosat:root=data/eurosat,split=test`` or ``templates:file=prompts.json``.
Backbone specs have their own grammar (see :mod:`labelless.backbones`).
"""

from __future__ import annotations

from labelless.errors import ConfigError


def parse_spec(spec: str, what: str = "spec") -> tuple[str, dict[str, str]]:
    """Split ``"name:k=v,k2=v2"`` into ``("name", {"k": "v", "k2": "v2"})``.

    Values may contain ``:`` and ``=`` (paths, URLs); a comma starts a new key only when the
    text after it looks like ``key=``.
    """
    if not spec or not spec.strip():
        raise ConfigError(f"empty {what}")
    name, _, rest = spec.strip().partition(":")
    opts: dict[str, str] = {}
    if rest:
        parts: list[str] = []
        for piece in rest.split(","):
            head = piece.split("=", 1)[0]
            if parts and ("=" not in piece or not head.strip().isidentifier()):
                parts[-1] += "," + piece  # a comma inside a value
            else:
                parts.append(piece)
        for part in parts:
            if "=" not in part:
                raise ConfigError(
                    f"bad {what} '{spec}': expected name:key=value,key=value (got '{part}')"
                )
            k, v = part.split("=", 1)
            k = k.strip()
            if k in opts:
                raise ConfigError(f"bad {what} '{spec}': key '{k}' given twice")
            opts[k] = v.strip()
    return name.strip(), opts
