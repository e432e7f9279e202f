"""Prompts of the text-generation front end: CuPL class questions and LaTTe-CLIP image prompts.

``CUPL_QUESTIONS`` are the five generic questions CuPL (Pratt et al., ICCV 2023) asks an LLM
about every ImageNet class; ``IMAGE_PROMPT`` and ``GROUP_PROMPT`` are LaTTe-CLIP's (Cao et al.,
WACV 2025, Sec. 3.1) image- and group-description prompts with the ``{domain}`` word supplied by
the user ("car", "flower", "satellite image", ...).
"""

from __future__ import annotations

import json
from pathlib import Path

from labelless.errors import ConfigError

#: CuPL's generic ImageNet questions (``{c}`` is the class name).
CUPL_QUESTIONS: tuple[str, ...] = (
    "Describe what a {c} looks like",
    "How can you identify a {c}?",
    "What does a {c} look like?",
    "Describe an image from the internet of a {c}",
    "A caption of an image of a {c}:",
)

#: System message sent with every class question (chat models ramble without it; CuPL's
#: completions were capped at 50 tokens).
CLASS_SYSTEM = "Answer in one or two short sentences of plain text, without lists or preamble."

#: LaTTe-CLIP's image-description prompt (paper Sec. 3.1).
IMAGE_PROMPT = "Describe the {domain} in the photo concisely, using less than 20 words."

#: LaTTe-CLIP's group-description prompt, asked about a collage of K images (paper Sec. 3.1).
GROUP_PROMPT = (
    "Describe the common visual attributes of the {domain} in all the photos concisely, "
    "in fewer than 20 words."
)


def load_questions(path: str | Path) -> tuple[str, ...]:
    """Read a JSON list of question templates (each with ``{c}``), e.g. domain-specific CuPL
    questions such as ``"How can you tell that the food in this photo is {c}?"``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"question file '{path}': {e}") from None
    if not isinstance(data, list) or not data or not all(isinstance(q, str) for q in data):
        raise ConfigError(f"question file '{path}': expected a non-empty JSON list of strings")
    bad = [q for q in data if "{c}" not in q]
    if bad:
        raise ConfigError(f"question file '{path}': every question needs '{{c}}', e.g. {bad[0]!r}")
    return tuple(data)


def domain_prompt(template: str, domain: str) -> str:
    """``template`` with ``{domain}`` filled (the domain must be a non-empty word or phrase)."""
    domain = " ".join(str(domain).split())
    if not domain:
        raise ConfigError("the domain word is empty: pass e.g. --domain car (flower, pet, ...)")
    return template.replace("{domain}", domain)
