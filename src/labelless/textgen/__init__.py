"""Text generation front end: LLM class descriptions (CuPL) and LMM image/group descriptions
(LaTTe-CLIP), from an OpenAI-compatible server or a local Hugging Face model.

    backend = OpenAIBackend(model="llava-hf/llava-v1.6-mistral-7b-hf", base_url="http://localhost:8000/v1")
    with ReplyCache("captions.cache.jsonl") as cache:
        captions, report = describe_images(paths, backend, cache, domain="car")

The CLI commands ``describe-classes`` / ``describe-images`` are in :mod:`labelless.textgen.cli`.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    **dict.fromkeys(
        ["Backend", "BadReplyError", "HFBackend", "OpenAIBackend", "RequestError", "RetryPolicy",
         "TextGenError", "TransientError", "clean_reply", "image_data_url", "make_backend"],
        "labelless.textgen.backends"),
    **dict.fromkeys(["ReplyCache", "request_key"], "labelless.textgen.cache"),
    **dict.fromkeys(["collage_grid", "make_collage"], "labelless.textgen.collage"),
    **dict.fromkeys(
        ["GenerationReport", "Request", "describe_classes", "describe_groups", "describe_images",
         "load_groups", "plan_groups", "read_pseudo_labels", "run_requests"],
        "labelless.textgen.generate"),
    **dict.fromkeys(["CUPL_QUESTIONS", "GROUP_PROMPT", "IMAGE_PROMPT"], "labelless.textgen.prompts"),
}


def __getattr__(name: str) -> Any:
    """Names load on first use, so the CLI's subcommands register without importing torch."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'labelless.textgen' has no attribute '{name}'")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "CUPL_QUESTIONS", "GROUP_PROMPT", "IMAGE_PROMPT", "Backend", "BadReplyError", "GenerationReport",
    "HFBackend", "OpenAIBackend", "ReplyCache", "Request", "RequestError", "RetryPolicy",
    "TextGenError", "TransientError", "clean_reply", "collage_grid", "describe_classes",
    "describe_groups", "describe_images", "image_data_url", "load_groups",
    "make_backend", "make_collage", "plan_groups", "read_pseudo_labels", "request_key",
    "run_requests",
]
