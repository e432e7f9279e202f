"""Text generation front end: LLM class descriptions (CuPL) and LMM image/group descriptions
(LaTTe-CLIP), from an OpenAI-compatible server or a local Hugging Face model.

    backend = OpenAIBackend(model="llava-hf/llava-v1.6-mistral-7b-hf", base_url="http://localhost:8000/v1")
    with ReplyCache("captions.cache.jsonl") as cache:
        captions, report = describe_images(paths, backend, cache, domain="car")

The CLI commands ``describe-classes`` / ``describe-images`` are in :mod:`labelless.textgen.cli`.
"""

from labelless.textgen.backends import (
    Backend,
    BadReplyError,
    HFBackend,
    OpenAIBackend,
    RequestError,
    RetryPolicy,
    TextGenError,
    TransientError,
    clean_reply,
    image_data_url,
    make_backend,
)
from labelless.textgen.cache import ReplyCache, file_hash, request_key
from labelless.textgen.collage import collage_grid, make_collage
from labelless.textgen.generate import (
    GenerationReport,
    Request,
    describe_classes,
    describe_groups,
    describe_images,
    load_groups,
    plan_groups,
    read_pseudo_labels,
    run_requests,
)
from labelless.textgen.prompts import CUPL_QUESTIONS, GROUP_PROMPT, IMAGE_PROMPT

__all__ = [
    "CUPL_QUESTIONS", "GROUP_PROMPT", "IMAGE_PROMPT", "Backend", "BadReplyError", "GenerationReport",
    "HFBackend", "OpenAIBackend", "ReplyCache", "Request", "RequestError", "RetryPolicy",
    "TextGenError", "TransientError", "clean_reply", "collage_grid", "describe_classes",
    "describe_groups", "describe_images", "file_hash", "image_data_url", "load_groups",
    "make_backend", "make_collage", "plan_groups", "read_pseudo_labels", "request_key",
    "run_requests",
]
