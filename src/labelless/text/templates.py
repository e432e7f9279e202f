"""Prompt templates: built-in sets, template files and ``{c}`` expansion.

A template is a string with one class-name placeholder, written ``{c}`` or ``{}`` (the latter is
what the OpenAI, CoOp and DPA files use). Expansion is a plain string replacement rather than
``str.format`` so that templates may contain other braces.
"""

from __future__ import annotations

import json
from pathlib import Path

from labelless.errors import TextSourceError, did_you_mean

PLACEHOLDERS = ("{c}", "{}")

# The 80 prompts of OpenAI's "Prompt_Engineering_for_ImageNet" notebook, in its order.
IMAGENET_TEMPLATES = (
    "a bad photo of a {c}.",
    "a photo of many {c}.",
    "a sculpture of a {c}.",
    "a photo of the hard to see {c}.",
    "a low resolution photo of the {c}.",
    "a rendering of a {c}.",
    "graffiti of a {c}.",
    "a bad photo of the {c}.",
    "a cropped photo of the {c}.",
    "a tattoo of a {c}.",
    "the embroidered {c}.",
    "a photo of a hard to see {c}.",
    "a bright photo of a {c}.",
    "a photo of a clean {c}.",
    "a photo of a dirty {c}.",
    "a dark photo of the {c}.",
    "a drawing of a {c}.",
    "a photo of my {c}.",
    "the plastic {c}.",
    "a photo of the cool {c}.",
    "a close-up photo of a {c}.",
    "a black and white photo of the {c}.",
    "a painting of the {c}.",
    "a painting of a {c}.",
    "a pixelated photo of the {c}.",
    "a sculpture of the {c}.",
    "a bright photo of the {c}.",
    "a cropped photo of a {c}.",
    "a plastic {c}.",
    "a photo of the dirty {c}.",
    "a jpeg corrupted photo of a {c}.",
    "a blurry photo of the {c}.",
    "a photo of the {c}.",
    "a good photo of the {c}.",
    "a rendering of the {c}.",
    "a {c} in a video game.",
    "a photo of one {c}.",
    "a doodle of a {c}.",
    "a close-up photo of the {c}.",
    "a photo of a {c}.",
    "the origami {c}.",
    "the {c} in a video game.",
    "a sketch of a {c}.",
    "a doodle of the {c}.",
    "a origami {c}.",
    "a low resolution photo of a {c}.",
    "the toy {c}.",
    "a rendition of the {c}.",
    "a photo of the clean {c}.",
    "a photo of a large {c}.",
    "a rendition of a {c}.",
    "a photo of a nice {c}.",
    "a photo of a weird {c}.",
    "a blurry photo of a {c}.",
    "a cartoon {c}.",
    "art of a {c}.",
    "a sketch of the {c}.",
    "a embroidered {c}.",
    "a pixelated photo of a {c}.",
    "itap of the {c}.",
    "a jpeg corrupted photo of the {c}.",
    "a good photo of a {c}.",
    "a plushie {c}.",
    "a photo of the nice {c}.",
    "a photo of the small {c}.",
    "a photo of the weird {c}.",
    "the cartoon {c}.",
    "art of the {c}.",
    "a drawing of the {c}.",
    "a photo of the large {c}.",
    "a black and white photo of a {c}.",
    "the plushie {c}.",
    "a dark photo of a {c}.",
    "itap of a {c}.",
    "graffiti of the {c}.",
    "a toy {c}.",
    "itap of my {c}.",
    "a photo of a cool {c}.",
    "a photo of a small {c}.",
    "a tattoo of the {c}.",
)

# The 7-prompt subset OpenAI found by forward selection on ImageNet (same notebook).
OPENAI_ENSEMBLE_TEMPLATES = (
    "itap of a {c}.",
    "a bad photo of the {c}.",
    "a origami {c}.",
    "a photo of the large {c}.",
    "a {c} in a video game.",
    "art of the {c}.",
    "a photo of the small {c}.",
)

# LaTTe-CLIP's per-data-set ``templates`` lists (astra-vision/LatteCLIP @ cf315fb,
# ``src/training/abo.py``: one prompt each; the base class's "a photo of a {c}." where a data set
# sets none). The official zero-shot classifier (``build_zero_shot_classifier``) and the label
# text ``templates[0]`` both use them, so the "ensemble" is this one prompt. They differ from
# CoOp's for eurosat, food101, oxford_pets and ucf101.
LATTECLIP_TEMPLATES: dict[str, tuple[str, ...]] = {
    "caltech101": ("a photo of a {c}.",),
    "dtd": ("{c} texture.",),
    "eurosat": ("a photo of a {c}.",),
    "fgvc_aircraft": ("a photo of a {c}, a type of aircraft.",),
    "food101": ("a photo of a {c}, a type of food.",),
    "oxford_flowers": ("a photo of a {c}, a type of flower.",),
    "oxford_pets": ("a photo of a {c}.",),
    "stanford_cars": ("a photo of a {c}.",),
    "sun397": ("a photo of a {c}.",),
    "ucf101": ("a photo of a person doing {c}",),
}

# Built-in sets by name. The per-data-set entries are CoOp's single hand-written prompts;
# ``latteclip-<data set>`` are LaTTe-CLIP's (:data:`LATTECLIP_TEMPLATES`).
TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "clip": ("a photo of a {c}.",),
    "imagenet": IMAGENET_TEMPLATES,
    "openai-ensemble": OPENAI_ENSEMBLE_TEMPLATES,
    "eurosat": ("a centered satellite photo of {c}.",),
    "dtd": ("{c} texture.",),
    "oxford_flowers": ("a photo of a {c}, a type of flower.",),
    "oxford_pets": ("a photo of a {c}, a type of pet.",),
    "fgvc_aircraft": ("a photo of a {c}, a type of aircraft.",),
    "food101": ("a photo of {c}, a type of food.",),
    "ucf101": ("a photo of a person doing {c}.",),
    "caltech101": ("a photo of a {c}.",),
    "sun397": ("a photo of a {c}.",),
    "stanford_cars": ("a photo of a {c}.",),
    **{f"latteclip-{name}": prompts for name, prompts in LATTECLIP_TEMPLATES.items()},
}


def get_templates(name: str) -> list[str]:
    """The built-in template set ``name`` (see :data:`TEMPLATE_SETS`)."""
    try:
        return list(TEMPLATE_SETS[name])
    except KeyError:
        raise TextSourceError(
            f"unknown template set '{name}'.{did_you_mean(name, TEMPLATE_SETS)} "
            f"Built-in sets: {', '.join(TEMPLATE_SETS)}; or pass templates:file=F.json"
        ) from None


def check_templates(templates, origin: str) -> list[str]:
    """Validate a template list (non-empty strings, each with a placeholder); ``origin`` names
    where it came from in error messages."""
    if isinstance(templates, str) or not isinstance(templates, (list, tuple)):
        raise TextSourceError(
            f"{origin}: expected a list of template strings, got {type(templates).__name__}"
        )
    if not templates:
        raise TextSourceError(f"{origin}: the template list is empty")
    for i, t in enumerate(templates):
        if not isinstance(t, str):
            raise TextSourceError(
                f"{origin}: template #{i} is a {type(t).__name__}, expected a string"
            )
        if not any(p in t for p in PLACEHOLDERS):
            raise TextSourceError(
                f"{origin}: template #{i} '{t}' has no class placeholder; write {{c}} or {{}}"
            )
    return list(templates)


def load_templates(path: str | Path, key: str | None = None) -> list[str]:
    """Read templates from a JSON file: a list of strings, or (with ``key``) a dict of lists such
    as DPA's ``templates.json`` (``{"eurosat": [...], ...}``)."""
    data = _read_json(path)
    origin = f"template file '{path}'"
    if key is not None:
        if not isinstance(data, dict):
            raise TextSourceError(
                f"{origin}: key={key} given but the file holds a {type(data).__name__}, "
                "not a {name: [templates]} object"
            )
        if key not in data:
            raise TextSourceError(
                f"{origin} has no key '{key}'.{did_you_mean(key, data)} "
                f"Keys: {', '.join(map(str, data))}"
            )
        return check_templates(data[key], f"{origin}, key '{key}'")
    if isinstance(data, dict):
        raise TextSourceError(
            f"{origin} holds an object with keys {', '.join(map(str, list(data)[:10]))}; "
            "choose one with templates:file=F,key=NAME"
        )
    return check_templates(data, origin)


def expand_template(template: str, classname: str) -> str:
    """``template`` with every ``{c}`` / ``{}`` replaced by ``classname``."""
    for p in PLACEHOLDERS:
        template = template.replace(p, classname)
    return template


def expand_templates(templates: list[str], classnames: list[str]) -> dict[str, list[str]]:
    """``{class: [template expanded with class for each template]}``, in class order."""
    return {c: [expand_template(t, c) for t in templates] for c in classnames}


def _read_json(path: str | Path):
    p = Path(path)
    if not p.is_file():
        raise TextSourceError(f"text file '{path}' does not exist (or is not a file)")
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise TextSourceError(f"text file '{path}' is not valid JSON: {e}") from None
    except UnicodeDecodeError as e:
        raise TextSourceError(f"text file '{path}' is not UTF-8 text: {e}") from None
