"""Text sources (class names, templates, LLM descriptions, per-image captions) and their encoding.

Every class-level source reduces to ``dict[classname, list[str]]`` keyed by the task's class
names in class order (:func:`build_texts`); :func:`encode_class_texts` (any encoder) or :func:`encode_texts` (a backbone) turn that into
padded embeddings ``(C, M, d)`` with a mask ``(C, M)``.
"""

from labelless.text.encode import ClassTexts, encode_class_texts, encode_texts
from labelless.text.sources import (
    build_texts,
    builtin_alias_sets,
    load_aliases,
    load_captions,
    load_descriptions,
    match_descriptions,
)
from labelless.text.templates import (
    TEMPLATE_SETS,
    expand_templates,
    get_templates,
    load_templates,
)

__all__ = [
    "TEMPLATE_SETS",
    "ClassTexts",
    "build_texts",
    "builtin_alias_sets",
    "encode_class_texts",
    "encode_texts",
    "expand_templates",
    "get_templates",
    "load_aliases",
    "load_captions",
    "load_descriptions",
    "load_templates",
    "match_descriptions",
]
