"""CODER-style dense class texts (``labelless describe-classes --style coder``).

CODER (Yi, Ren, Zhan, Ye, "Leveraging Cross-Modal Neighbor Representation for Improved CLIP
Classification", CVPR 2024; code: https://github.com/YCaigogogo/CVPR24-CODER @ 89a6400,
``ATG/ATG.py`` and ``CODER/template.py``) builds many texts per class from five kinds of LLM
answer, each filled into a template:

=======  ==================================================  =====================================
type     what the LLM is asked                                sentence (CODER's generic template)
=======  ==================================================  =====================================
name     nothing (the class name)                             ``a photo of {c}``
syno     synonyms of the class name                           ``a photo of {synonym}``
att      visual features that identify the class              ``{c} which has {feature}``
ana      other objects that look similar                      ``a {c} similar to {object}.``
ovo      for every other class ``o``: what tells ``c`` apart  ``Because of {feature}, {c} is
                                                              different from {o}.``
=======  ==================================================  =====================================

FAIR's suppl. Table 7 uses these texts as a fixed pseudo-labeller ("FAIR w/ CODER PL"; here the
FAIR preset ``ablation=coder_pl`` with ``pl_texts=`` the file this writes).

Ours: the questions ask for a plain list (one item per line) instead of CODER's few-shot
``_item`` format, so any chat model answers in a parseable shape; synonyms come from the LLM
(CODER's ``syno_expert=chatgpt``; its default is WordNet); one-vs-one asks one question per
*ordered* pair, about the first class's features only (CODER asks per pair for both sides in one
reply): ``C (C - 1)`` requests for ``C`` classes; CODER's ``ana`` filter (drop answers whose CLIP
text embedding is within cosine 0.9 of another class name) is not applied; one ovo template
(CODER's generic set has seven paraphrases).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

#: The five CODER text types, in output order.
CODER_TYPES: tuple[str, ...] = ("name", "syno", "att", "ana", "ovo")

#: Questions per type (``{c}`` the class, ``{o}`` the other class of a one-vs-one pair).
CODER_QUESTIONS: dict[str, str] = {
    "syno": "What are the synonyms for {c}?",
    "att": "What are useful visual features for distinguishing a {c} in a photo?",
    "ana": "What other objects are visually similar to {c}?",
    "ovo": ("What are different visual features between the {c} and the {o} in a photo? Focus on "
            "their key differences, and name only the features of the {c}."),
}

#: System message of every CODER request: a list answer, parsed by :func:`parse_list`.
CODER_SYSTEM = "Answer with a plain list: one short item per line, without numbering or preamble."

#: Sentence template per type (CODER's generic templates, ``CODER/template.py``).
CODER_TEMPLATES: dict[str, str] = {
    "name": "a photo of {c}",
    "syno": "a photo of {x}",
    "att": "{c} which has {x}",
    "ana": "a {c} similar to {x}.",
    "ovo": "Because of {x}, {c} is different from {o}.",
}

_BULLET = re.compile(r"^\s*(?:[-_*\u2022]+|\d+[.)]|\(\d+\))\s*")


def parse_list(reply: str, limit: int = 20) -> list[str]:
    """The items of a list answer: one per line, bullets/numbering and a final period removed,
    empty and repeated items dropped, at most ``limit``. A one-line comma list is split too."""
    lines = [ln for ln in reply.splitlines() if ln.strip()]
    if len(lines) == 1 and "," in lines[0]:
        lines = lines[0].split(",")
    items: list[str] = []
    for ln in lines:
        item = _BULLET.sub("", ln).strip().rstrip(".").strip()
        if item.endswith(":"):  # a heading such as "Features of X:"
            continue
        if item and item.lower() not in {i.lower() for i in items}:
            items.append(item)
    return items[:limit]


def coder_sentences(c: str, answers: dict[str, list], types: Sequence[str] = CODER_TYPES) -> list[str]:
    """Class ``c``'s sentences from its parsed answers ``{type: items}``; ``ovo`` items are
    ``(other class, [features])`` pairs. Types in ``types`` order, exact repeats dropped."""
    out: list[str] = []
    for t in types:
        if t == "name":
            new = [CODER_TEMPLATES["name"].format(c=c)]
        elif t == "ovo":
            new = [CODER_TEMPLATES["ovo"].format(x=x, c=c, o=o) for o, xs in answers.get("ovo", []) for x in xs]
        else:
            new = [CODER_TEMPLATES[t].format(c=c, x=x) for x in answers.get(t, [])]
        out += [s for s in new if s not in out]
    return out


def describe_classes_coder(
    classnames: Sequence[str],
    backend,
    cache,
    *,
    types: Sequence[str] = CODER_TYPES,
    samples: int = 1,
    workers: int = 4,
    progress: bool = True,
):
    """CODER's five text types for every class: ``({class: [sentences]}, report)``.

    Every question is asked ``samples`` times (sample k is its own cache entry); ``ovo`` asks
    about every ordered pair of classes. A class is in the result only when every one of its
    requests got an answer (a partial class would pass for a complete one).
    """
    from labelless.errors import ConfigError
    from labelless.textgen.cache import request_key
    from labelless.textgen.generate import Request, run_requests

    bad = [t for t in types if t not in CODER_TYPES]
    if bad or not types:
        raise ConfigError(f"CODER types must be among {', '.join(CODER_TYPES)}, got {list(types)}")
    if samples < 1:
        raise ConfigError(f"samples must be >= 1, got {samples}")
    ident = backend.identity()
    plan: list[tuple[str, str, str | None, str]] = []  # (class, type, other class, key)
    reqs = []
    for c in classnames:
        asks = [(t, None) for t in types if t in ("syno", "att", "ana")]
        if "ovo" in types:
            asks += [("ovo", o) for o in classnames if o != c]
        for t, o in asks:
            prompt = CODER_QUESTIONS[t].replace("{c}", c).replace("{o}", o or "")
            for k in range(samples):
                key = request_key(ident, prompt, [], CODER_SYSTEM, sample=k)
                plan.append((c, t, o, key))
                reqs.append(Request(key, prompt, None, CODER_SYSTEM))
    report = run_requests(reqs, backend, cache, workers=workers, progress=progress,
                          desc="CODER class texts")
    answers: dict[str, dict[str, list]] = {c: {} for c in classnames}
    failed: set[str] = set()
    for c, t, o, key in plan:
        text = report.texts.get(key)
        if text is None:
            failed.add(c)
            continue
        items = parse_list(text)
        if t == "ovo":
            answers[c].setdefault("ovo", []).append((o, items))
        else:
            answers[c].setdefault(t, []).extend(i for i in items if i not in answers[c].get(t, []))
    out = {c: coder_sentences(c, answers[c], types) for c in classnames if c not in failed}
    return {c: v for c, v in out.items() if v}, report


__all__ = ["CODER_QUESTIONS", "CODER_SYSTEM", "CODER_TEMPLATES", "CODER_TYPES", "coder_sentences",
           "describe_classes_coder", "parse_list"]
