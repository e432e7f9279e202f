"""Text sources: every source turns a spec string into ``{classname: [sentences]}``.

Sources are registered in :data:`labelless.registry.TEXT_SOURCES` as functions
``source(classnames: list[str], **opts: str) -> dict[str, list[str]]`` and are chosen with a spec
string (``templates:name=imagenet``, ``descriptions:path=cupl.json,aliases=eurosat-wca``, ...).
The result is keyed by the task's exact class names in class order, so scorers never need to
know where the sentences came from. ``captions`` is the one exception: it is per image.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from importlib import resources
from pathlib import Path

from labelless.errors import TextSourceError, close_matches, did_you_mean
from labelless.registry import TEXT_SOURCES
from labelless.spec import parse_spec
from labelless.text.templates import (
    _read_json,
    expand_templates,
    get_templates,
    load_templates,
)

log = logging.getLogger(__name__)

FALLBACK_TEMPLATE = "a photo of a {c}."
NORMALIZE_MODES = ("none", "lower", "underscores")
MISSING_MODES = ("error", "template", "names")


def build_texts(spec: str, classnames: list[str]) -> dict[str, list[str]]:
    """Sentences per class for the text source ``spec``, keyed by ``classnames`` in order.

    ``spec`` is ``NAME[:k=v,...]`` with NAME one of :data:`TEXT_SOURCES`:
    ``names``, ``templates:name=SET`` / ``templates:file=F.json[,key=K]``,
    ``descriptions:path=F.json|name=SET[,aliases=F|BUILTIN][,normalize=none|lower|underscores]
    [,missing=error|template|names][,prefix=TEXT]``, and ``captions:path=F.json`` (the only
    per-image source: it returns ``{image_id: [captions]}`` instead, see :func:`load_captions`).
    """
    classnames = _check_classnames(classnames)
    name, opts = parse_spec(spec, what="text source spec")
    source = TEXT_SOURCES.get(name)
    return source(classnames, **opts)


def _check_classnames(classnames) -> list[str]:
    classnames = list(classnames)
    if not classnames:
        raise TextSourceError("the class list is empty; a text source needs at least one class")
    bad = [c for c in classnames if not isinstance(c, str) or not c.strip()]
    if bad:
        raise TextSourceError(f"class names must be non-empty strings, got {bad[:5]!r}")
    seen: set[str] = set()
    dupes = sorted({c for c in classnames if c in seen or seen.add(c)})
    if dupes:
        raise TextSourceError(f"the class list has duplicate names: {', '.join(map(repr, dupes))}")
    return classnames


def _check_opts(source: str, opts: dict[str, str], allowed: tuple[str, ...]) -> None:
    for k in opts:
        if k not in allowed:
            hint = did_you_mean(k, allowed)
            raise TextSourceError(
                f"text source '{source}' has no option '{k}'.{hint} "
                f"Options: {', '.join(allowed) if allowed else '(none)'}"
            )


# --------------------------------------------------------------------------------------------
# names, templates


@TEXT_SOURCES.register("names")
def names_source(classnames: list[str], **opts: str) -> dict[str, list[str]]:
    """The class name itself as the only sentence of each class."""
    _check_opts("names", opts, ())
    return {c: [c] for c in classnames}


@TEXT_SOURCES.register("templates")
def templates_source(classnames: list[str], **opts: str) -> dict[str, list[str]]:
    """Prompt templates expanded per class: ``name=SET`` (built-in) or ``file=F.json[,key=K]``."""
    _check_opts("templates", opts, ("name", "file", "key"))
    if ("name" in opts) == ("file" in opts):
        raise TextSourceError(
            "templates: give exactly one of name=SET (built-in: clip, imagenet, openai-ensemble, "
            "eurosat, ...) or file=F.json"
        )
    if "name" in opts:
        if "key" in opts:
            raise TextSourceError("templates: key= only applies to file=F.json")
        templates = get_templates(opts["name"])
    else:
        templates = load_templates(opts["file"], key=opts.get("key"))
    return expand_templates(templates, classnames)


# --------------------------------------------------------------------------------------------
# descriptions


def builtin_alias_sets() -> list[str]:
    """Names of the alias files shipped in ``labelless/text/aliases/``."""
    root = resources.files("labelless.text") / "aliases"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".json"))


def load_aliases(ref: str) -> dict[str, str]:
    """An alias map ``{file_key: class_name}`` from a JSON file path or a built-in set name."""
    if Path(ref).is_file():
        data, origin = _read_json(ref), f"alias file '{ref}'"
    else:
        builtins = builtin_alias_sets()
        if ref not in builtins:
            raise TextSourceError(
                f"aliases='{ref}' is neither a file nor a built-in alias set."
                f"{did_you_mean(ref, builtins)} Built-in: {', '.join(builtins)}"
            )
        path = resources.files("labelless.text") / "aliases" / f"{ref}.json"
        data, origin = json.loads(path.read_text(encoding="utf-8")), f"built-in alias set '{ref}'"
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise TextSourceError(f"{origin}: expected a JSON object {{file_key: class_name}}")
    return data


def load_descriptions(path: str | Path) -> dict[str, list[str]]:
    """Read a CuPL/LaFTer/WCA description file ``{classname: [sentences]}``, validated: every
    value a non-empty list of non-empty strings. Keys are returned as written in the file."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise TextSourceError(
            f"description file '{path}' holds a {type(data).__name__}; expected a JSON object "
            "{classname: [sentences]}"
        )
    if not data:
        raise TextSourceError(f"description file '{path}' is empty")
    for key, sentences in data.items():
        if not isinstance(sentences, list):
            raise TextSourceError(
                f"description file '{path}', class '{key}': expected a list of sentences, "
                f"got {type(sentences).__name__}"
            )
        if not sentences:
            raise TextSourceError(f"description file '{path}', class '{key}': no sentences")
        for i, s in enumerate(sentences):
            if not isinstance(s, str) or not s.strip():
                raise TextSourceError(
                    f"description file '{path}', class '{key}': sentence #{i} is "
                    f"{s!r}; expected a non-empty string"
                )
    return data


def _norm_key(text: str, mode: str) -> str:
    if mode == "none":
        return text
    text = text.casefold()
    if mode == "underscores":
        text = text.replace("_", " ")
    return " ".join(text.split())


def _closest(name: str, keys: list[str]) -> str | None:
    """The key most similar to ``name``: character similarity, falling back to word overlap so
    that reordered names ('Sea or Lake' / 'lake or sea') still match."""
    if not keys:
        return None
    hits = close_matches(name, keys, n=1)
    if hits:
        return hits[0]

    def words(s: str) -> set[str]:
        return set(re.findall(r"[a-z0-9]+", s.lower()))

    def score(k: str) -> float:
        a, b = words(name), words(k)
        jaccard = len(a & b) / len(a | b) if a | b else 0.0
        sorted_ratio = difflib.SequenceMatcher(
            None, " ".join(sorted(a)), " ".join(sorted(b))
        ).ratio()
        return max(jaccard, sorted_ratio)

    best = max(keys, key=score)
    return best if score(best) >= 0.5 else None


def match_descriptions(
    data: dict[str, list[str]],
    classnames: list[str],
    *,
    aliases: dict[str, str] | None = None,
    normalize: str = "none",
    missing: str = "error",
    origin: str = "descriptions",
) -> dict[str, list[str]]:
    """Re-key ``data`` (file keys) to ``classnames``.

    A file key ``k`` stands for class ``aliases.get(k, k)``; keys and class names are compared
    exactly (``normalize="none"``), case-insensitively (``"lower"``), or case-insensitively with
    ``_`` read as a space (``"underscores"``). Several file keys may be aliased to one class (their
    sentences are concatenated), but two keys that collide only through normalisation are an
    error. Classes without sentences raise :class:`TextSourceError` listing each one with the
    closest unused key, unless ``missing`` is ``"template"`` (``"a photo of a {c}."``) or
    ``"names"`` (the class name), which fill them and warn with a count.
    """
    if normalize not in NORMALIZE_MODES:
        raise TextSourceError(f"normalize='{normalize}' is not one of {', '.join(NORMALIZE_MODES)}")
    if missing not in MISSING_MODES:
        raise TextSourceError(f"missing='{missing}' is not one of {', '.join(MISSING_MODES)}")
    aliases = aliases or {}
    by_norm: dict[str, str] = {}
    for c in classnames:
        n = _norm_key(c, normalize)
        if n in by_norm:
            raise TextSourceError(
                f"class names '{by_norm[n]}' and '{c}' are the same under normalize={normalize}"
            )
        by_norm[n] = c

    out: dict[str, list[str]] = {c: [] for c in classnames}
    source_key: dict[str, str] = {}  # class -> the (non-aliased) file key that filled it
    unused: list[str] = []  # unused file keys as shown to the user
    unused_keys: list[str] = []  # the same keys, raw, for suggestions
    for key, sentences in data.items():
        target = aliases.get(key, key)
        cls = by_norm.get(_norm_key(target, normalize))
        if cls is None:
            unused.append(key if target == key else f"{key} (alias -> '{target}')")
            unused_keys.append(key)
            continue
        if key not in aliases:
            if cls in source_key:
                raise TextSourceError(
                    f"{origin}: keys '{source_key[cls]}' and '{key}' both match class '{cls}' "
                    f"under normalize={normalize}; remove one or map them with aliases="
                )
            source_key[cls] = key
        out[cls].extend(sentences)

    absent = [c for c in classnames if not out[c]]
    if absent and missing == "error":
        lines = []
        for c in absent:
            hint = _closest(c, unused_keys) or _closest(c, list(data))
            lines.append(
                f"  class '{c}' has no descriptions; "
                + (f"closest key: '{hint}'" if hint else "no similar key in the file")
            )
        msg = f"{origin} does not cover {len(absent)} of {len(classnames)} classes:\n"
        msg += "\n".join(lines)
        if unused:
            msg += "\n  unused keys in the file: " + ", ".join(f"'{u}'" for u in unused)
        msg += (
            "\nFix: map file keys to class names with aliases=F.json ({file_key: class_name}) or "
            f"a built-in set ({', '.join(builtin_alias_sets())}), compare loosely with "
            "normalize=lower|underscores, or fill the gaps with missing=template|names."
        )
        raise TextSourceError(msg)
    if absent:
        log.warning(
            f"{origin}: {len(absent)} of {len(classnames)} classes have no descriptions and use "
            f"{'the template ' + repr(FALLBACK_TEMPLATE) if missing == 'template' else 'the class name'}"
            f": {', '.join(absent[:10])}{' ...' if len(absent) > 10 else ''}"
        )
        for c in absent:
            out[c] = [FALLBACK_TEMPLATE.replace("{c}", c) if missing == "template" else c]
    if unused:
        # a key that matches no class is usually a misspelt class: say so instead of dropping it
        log.warning(
            f"{origin}: {len(unused)} key(s) match no class and are ignored: "
            + ", ".join(f"'{u}'" for u in unused[:10]) + (" ..." if len(unused) > 10 else "")
            + ". Map them to class names with aliases=, or compare loosely with "
            "normalize=lower|underscores."
        )
    return out


@TEXT_SOURCES.register("descriptions")
def descriptions_source(classnames: list[str], **opts: str) -> dict[str, list[str]]:
    """LLM class descriptions: a registered set (``name=cupl/dtd``) or a JSON file ``{classname: [sentences]}``."""
    _check_opts(
        "descriptions", opts, ("path", "name", "aliases", "normalize", "missing", "fallback", "prefix")
    )
    if ("path" in opts) == ("name" in opts):
        raise TextSourceError(
            "descriptions: give path=F.json (a file) or name=SET (a registered set, e.g. "
            "cupl/dtd, fetched on first use), exactly one"
        )
    if "missing" in opts and "fallback" in opts:
        raise TextSourceError("descriptions: give missing= or its synonym fallback=, not both")
    if "name" in opts:
        from labelless.text.resources import fetch_description_set

        path = str(fetch_description_set(opts["name"]))
    else:
        path = opts["path"]
    data = load_descriptions(path)
    out = match_descriptions(
        data,
        classnames,
        aliases=load_aliases(opts["aliases"]) if opts.get("aliases") else None,
        normalize=opts.get("normalize", "none"),
        missing=opts.get("missing", opts.get("fallback", "error")),
        origin=f"description file '{path}'",
    )
    prefix = opts.get("prefix")
    if prefix:
        # parse_spec strips values, so the separating space is added here; {c} is the class.
        out = {c: [f"{prefix.replace('{c}', c)} {s}" for s in ss] for c, ss in out.items()}
    return out


# --------------------------------------------------------------------------------------------
# captions (per image)


def load_captions(path: str | Path) -> dict[str, list[str]]:
    """Per-image captions ``{image_path_or_id: [captions]}`` (a single string is one caption)."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise TextSourceError(
            f"caption file '{path}' holds a {type(data).__name__}; expected a JSON object "
            "{image_path_or_id: [captions]}"
        )
    out: dict[str, list[str]] = {}
    for key, caps in data.items():
        if isinstance(caps, str):
            caps = [caps]
        if not isinstance(caps, list) or not caps:
            raise TextSourceError(
                f"caption file '{path}', image '{key}': expected a non-empty list of captions"
            )
        for i, s in enumerate(caps):
            if not isinstance(s, str) or not s.strip():
                raise TextSourceError(
                    f"caption file '{path}', image '{key}': caption #{i} is {s!r}; "
                    "expected a non-empty string"
                )
        out[str(key)] = list(caps)
    return out


@TEXT_SOURCES.register("captions")
def captions_source(classnames: list[str], **opts: str) -> dict[str, list[str]]:
    """Per-image captions (e.g. from an LMM), keyed by image path or id, not by class."""
    _check_opts("captions", opts, ("path",))
    if "path" not in opts:
        raise TextSourceError("captions: path=F.json is required")
    return load_captions(opts["path"])


captions_source.per_image = True  # build_texts callers: the keys are images, not classes
