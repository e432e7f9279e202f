"""SIMULATED CODER texts for a testbed task (``--texts testbed:what=coder``).

CODER (Yi et al., "Leveraging Cross-Modal Neighbor Representation for Improved CLIP
Classification", CVPR 2024; code: github.com/YCaigogogo/CVPR24-CODER @ 89a6400, ``ATG/ATG.py``,
``CODER/template.py``) asks an LLM for five kinds of text per class and fills each answer into a
template: ``name`` (the class name), ``syno`` (synonyms), ``att`` (visual attributes), ``ana``
(visually similar other objects) and ``ovo`` (for every other class, what tells the two apart).
FAIR's suppl. Table 7 uses them as a fixed pseudo-labeller ("FAIR w/ CODER PL").

Here the testbed's ground truth stands in for the LLM: each class's ``(shape, colour, texture)``
is what a perfect LLM would answer, written into the same generic templates that
:mod:`labelless.textgen.coder` uses for real LLM replies. Deterministic in the task config;
nothing is written to disk (so the task's cache key is unchanged).
"""

from __future__ import annotations

from labelless.testbed.task import TaskConfig
from labelless.textgen.coder import CODER_TYPES, coder_sentences


def _attributes(shape: str, colour: str, texture: str) -> dict[str, str]:
    tex = {"solid": "a single flat colour", "striped": "stripes", "dotted": "dots",
           "checkered": "a checkerboard pattern"}.get(texture, f"a {texture} pattern")
    return {"shape": f"a {shape} outline", "colour": f"a {colour} colour", "texture": tex}


def coder_answers(cfg: TaskConfig) -> dict[str, dict[str, list]]:
    """The simulated LLM answers per class: ``{class: {type: [items]}}`` with the item shapes of
    :func:`labelless.textgen.coder.coder_sentences` (``ovo``: ``[(other class, [differences])]``)."""
    out: dict[str, dict[str, list]] = {}
    for name, shape, colour, texture in cfg.classes:
        mine = _attributes(shape, colour, texture)
        ovo = []
        for other, o_shape, o_colour, o_texture in cfg.classes:
            if other == name:
                continue
            theirs = _attributes(o_shape, o_colour, o_texture)
            ovo.append((other, [mine[k] for k in mine if mine[k] != theirs[k]]))
        out[name] = {
            "name": [],
            # a fictional word has no synonyms: the plural and capitalised forms stand in
            "syno": [f"{name}s", name.capitalize()],
            "att": list(mine.values()),
            # "visually similar objects": what shares two of the three attributes, unnamed
            "ana": [f"a {colour} {shape}", f"a {shape} with {mine['texture']}",
                    f"a {colour} object with {mine['texture']}"],
            "ovo": ovo,
        }
    return out


def coder_texts(cfg: TaskConfig) -> dict[str, list[str]]:
    """``{class: [sentences]}``: the five CODER types per class, simulated (see module doc)."""
    answers = coder_answers(cfg)
    return {c: coder_sentences(c, answers[c], types=CODER_TYPES) for c in cfg.classnames}


__all__ = ["coder_answers", "coder_texts"]
