"""Chat backends that turn (prompt, images) into one text reply.

Two backends share one interface, :meth:`Backend.generate(prompt, images, system=None) -> str`:

* :class:`OpenAIBackend`: any OpenAI-compatible chat-completions endpoint with image input
  (vLLM, Ollama, LM Studio, llama.cpp server, the OpenAI API itself) through the ``openai``
  client; images travel as base64 PNG data URLs. HTTP-level failures (429, 408/409, 5xx,
  timeouts, connection errors) are retried by the ``openai`` client itself (its exponential
  backoff, or the server's ``Retry-After``); a malformed or empty reply, which the client
  cannot see as a failure, is retried here; both draw on one budget of retries per request.
  Other 4xx (bad model name, bad key...) raise :class:`RequestError` at once.
* :class:`HFBackend`: a local Hugging Face image-text-to-text model (LLaVA-NeXT, Qwen-VL, ...)
  through ``AutoProcessor`` + ``AutoModelForImageTextToText``, imported lazily; greedy decoding.

The API key is read from the argument or ``OPENAI_API_KEY`` and is never logged, printed or
written anywhere (``describe()`` omits it): every error text is passed through
:func:`labelless.utils.secrets.redact` before it is raised, so a server that echoes the
``Authorization`` header in its error body does not leak the key.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

from PIL import Image

from labelless.errors import ConfigError, LabellessError
from labelless.utils.secrets import redact, register_secret

log = logging.getLogger(__name__)

ENV_BASE_URL = "LABELLESS_LLM_BASE_URL"
ENV_MODEL = "LABELLESS_LLM_MODEL"
ENV_KEY = "OPENAI_API_KEY"


class TextGenError(LabellessError):
    """A generation request failed for good (after retries, or a non-retryable error)."""


class RequestError(TextGenError):
    """The server rejected the request (4xx other than 429): retrying cannot help."""


class TransientError(TextGenError):
    """A failure worth retrying: 429, 5xx, timeout, connection error, malformed/empty reply."""


class BadReplyError(TransientError):
    """The server answered, but with a malformed body or an empty text."""


def clean_reply(text: Any) -> str:
    """Collapse whitespace and strip wrapping quotes; raise :class:`BadReplyError` if empty."""
    if not isinstance(text, str):
        raise BadReplyError(f"reply is not text ({type(text).__name__})")
    text = " ".join(text.split()).strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    if not text:
        raise BadReplyError("empty reply")
    return text


def image_data_url(image: Image.Image) -> str:
    """A ``data:image/png;base64,...`` URL of ``image`` (RGB PNG)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@dataclass
class RetryPolicy:
    """How transient failures are retried.

    max_retries: retries after the first attempt (so at most ``max_retries + 1`` HTTP requests
        per reply, whatever failed). HTTP-level retries are the ``openai`` client's: it waits
        0.5 s doubling to 8 s, or what the server's ``Retry-After`` says (up to its own cap).
    backoff: first wait in seconds before re-asking after a malformed or empty reply; doubles
        each retry (with +-25% jitter), capped at ``max_backoff``.
    """

    max_retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0

    def __post_init__(self):
        if self.max_retries < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ConfigError("retry settings must be >= 0")

    def wait(self, attempt: int) -> float:
        base = min(self.backoff * (2**attempt), self.max_backoff)
        return base * random.uniform(0.75, 1.25)


class Backend:
    """Interface: one text reply for a prompt and optional images."""

    name: str = ""
    model: str = ""

    def generate(self, prompt: str, images: list[Image.Image] | None = None, system: str | None = None) -> str:
        raise NotImplementedError

    def identity(self) -> dict[str, Any]:
        """What makes a reply different (part of every cache key); never the API key."""
        return {"backend": self.name, "model": self.model}

    def describe(self) -> str:
        return f"{self.name}:{self.model}"


class OpenAIBackend(Backend):
    """OpenAI-compatible chat completions with image input.

    base_url: e.g. ``http://localhost:8000/v1`` (vLLM), ``http://localhost:11434/v1`` (Ollama);
        default ``$LABELLESS_LLM_BASE_URL`` (then the OpenAI API).
    model: served model name; default ``$LABELLESS_LLM_MODEL``.
    api_key: default ``$OPENAI_API_KEY``; local servers accept any string ("EMPTY" is sent).
    timeout: seconds per request. temperature, max_tokens, seed: sampling settings (part of
        the cache key). retry: :class:`RetryPolicy`.
    """

    name = "openai"

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        temperature: float = 0.0,
        max_tokens: int = 77,
        seed: int | None = None,
        retry: RetryPolicy | None = None,
    ):
        try:
            import openai
        except ImportError as e:  # pragma: no cover - openai is a dependency
            raise ConfigError("the openai backend needs `pip install openai`") from e
        self._openai = openai
        self.model = model or os.environ.get(ENV_MODEL, "")
        if not self.model:
            raise ConfigError(f"no model given: pass --llm-model or set {ENV_MODEL}")
        self.base_url = base_url or os.environ.get(ENV_BASE_URL) or None
        key = api_key or os.environ.get(ENV_KEY) or "EMPTY"
        register_secret(key)  # error texts shown, logged or cached never carry it
        if timeout <= 0:
            raise ConfigError(f"timeout must be > 0, got {timeout}")
        self.timeout = float(timeout)
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.seed = seed
        self.retry = retry or RetryPolicy()
        self.requests = 0  # HTTP requests sent, retries included
        self.retries = 0  # requests that were retries (reported in the run's summary)
        self._lock = threading.Lock()
        self._local = threading.local()  # per-thread count of requests for the current reply
        # The client retries HTTP-level failures; the request hook counts every attempt and
        # logs the retries on the labelless logger (the client logs them on the `openai` logger,
        # which nobody configures).
        hooks = {"request": [self._on_request], "response": [self._on_response]}
        http = openai.DefaultHttpxClient(timeout=self.timeout, event_hooks=hooks)
        self._client = openai.OpenAI(
            base_url=self.base_url, api_key=key, timeout=self.timeout,
            max_retries=self.retry.max_retries, http_client=http,
        )

    def _on_request(self, request) -> None:
        sent = getattr(self._local, "sent", 0) + 1
        self._local.sent = sent
        with self._lock:
            self.requests += 1
            self.retries += sent > 1
        if sent > 1:
            log.info("%s: retry %d of %d", self._local.why, sent - 1, self.retry.max_retries)
        self._local.why = "no reply (timeout or connection error)"

    def _on_response(self, response) -> None:
        self._local.why = f"HTTP {response.status_code}"

    def identity(self) -> dict[str, Any]:
        return {
            "backend": self.name, "model": self.model, "base_url": self.base_url,
            "temperature": self.temperature, "max_tokens": self.max_tokens, "seed": self.seed,
        }

    def describe(self) -> str:
        return f"openai-compatible {self.base_url or 'api.openai.com'} model={self.model}"

    def _messages(self, prompt: str, images, system: str | None) -> list[dict]:
        msgs: list[dict] = []
        if system:
            msgs.append({"role": "system", "content": system})
        if images:
            content = [{"type": "image_url", "image_url": {"url": image_data_url(im)}} for im in images]
            content.append({"type": "text", "text": prompt})
            msgs.append({"role": "user", "content": content})
        else:
            msgs.append({"role": "user", "content": prompt})
        return msgs

    def _once(self, messages: list[dict], retries: int) -> str:
        """One reply, the client retrying HTTP-level failures at most ``retries`` times."""
        oa = self._openai
        kwargs: dict[str, Any] = dict(
            model=self.model, messages=messages, temperature=self.temperature,
            max_tokens=self.max_tokens,
        )
        if self.seed is not None:
            kwargs["seed"] = self.seed
        client = self._client if retries == self.retry.max_retries else self._client.with_options(max_retries=retries)
        try:
            resp = client.chat.completions.create(**kwargs)
        except oa.RateLimitError as e:
            raise TransientError(f"429 rate limited: {_short(e)}") from e
        except oa.InternalServerError as e:
            raise TransientError(f"server error {getattr(e, 'status_code', '5xx')}: {_short(e)}") from e
        except oa.APITimeoutError as e:
            raise TransientError(f"timed out after {self.timeout:g}s") from e
        except oa.APIConnectionError as e:
            raise TransientError(f"connection error: {_short(e)}") from e
        except oa.APIStatusError as e:
            code = getattr(e, "status_code", None)
            if code is not None and (code == 429 or code >= 500):
                raise TransientError(f"HTTP {code}: {_short(e)}") from e
            raise RequestError(
                f"the server rejected the request (HTTP {code}): {_short(e)}. Check the model name "
                f"('{self.model}'), the base URL and the API key; retrying cannot fix this."
            ) from e
        except (ValueError, oa.APIResponseValidationError) as e:  # invalid JSON body
            raise BadReplyError(f"malformed response: {_short(e)}") from e
        return clean_reply(_reply_text(resp))

    def generate(self, prompt: str, images: list[Image.Image] | None = None, system: str | None = None) -> str:
        messages = self._messages(prompt, images, system)
        self._local.sent = 0
        bad_replies = 0
        while True:
            try:
                return self._once(messages, self.retry.max_retries - self._local.sent)
            except BadReplyError as e:
                if self._local.sent > self.retry.max_retries:
                    raise TextGenError(f"gave up after {self._local.sent} attempts: {e}") from e
                self._local.why = str(e)
                time.sleep(self.retry.wait(bad_replies))
                bad_replies += 1
            except TransientError as e:  # the client has already spent the retries it could
                raise TextGenError(f"gave up after {self._local.sent} attempts: {e}") from e


def _short(e: Exception, n: int = 200) -> str:
    """The error's text on one line, secrets redacted (before cutting: a cut must not leave
    half a key), at most ``n`` characters."""
    text = redact(" ".join(str(e).split()))
    return text if len(text) <= n else text[: n - 3] + "..."


def _reply_text(resp: Any) -> Any:
    """The first choice's message text of a chat-completions response, or raise BadReplyError."""
    if isinstance(resp, (str, bytes)) or resp is None:
        raise BadReplyError("malformed response: not a JSON chat completion")
    choices = getattr(resp, "choices", None)
    if not choices:
        raise BadReplyError("malformed response: no choices")
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    if isinstance(content, list):  # some servers return content parts
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content


class HFBackend(Backend):
    """A local Hugging Face image-text-to-text model (LLaVA-NeXT, Qwen2-VL, ...), greedy decoding.

    model: hub id or local folder (``llava-hf/llava-v1.6-mistral-7b-hf``, LaTTe-CLIP's choice).
    device: ``cpu``/``cuda``/``auto``; dtype: ``auto``, ``float16``, ``bfloat16``, ``float32``.
    max_new_tokens: 77 as in LaTTe-CLIP's caption scripts.
    ``model_obj``/``processor`` may be passed directly (tests, or a model already loaded).
    """

    name = "hf"

    def __init__(
        self,
        model: str = "",
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_new_tokens: int = 77,
        model_obj=None,
        processor=None,
    ):
        import torch

        self.model = model or getattr(getattr(model_obj, "config", None), "_name_or_path", "") or "local"
        self.max_new_tokens = int(max_new_tokens)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        if model_obj is None or processor is None:
            try:
                from transformers import AutoModelForImageTextToText, AutoProcessor
            except ImportError as e:  # pragma: no cover
                raise ConfigError("the hf backend needs `pip install transformers`") from e
            if not model:
                raise ConfigError("the hf backend needs --llm-model (a hub id or local folder)")
            torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
            processor = processor or AutoProcessor.from_pretrained(model)
            model_obj = model_obj or AutoModelForImageTextToText.from_pretrained(model, dtype=torch_dtype)
        self.processor = processor
        self.net = model_obj.to(device).eval()
        self._lock = threading.Lock()  # one generate at a time on the shared model
        self.requests = 0
        self.retries = 0  # a local model is never retried

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model, "max_new_tokens": self.max_new_tokens,
                "decoding": "greedy"}

    def messages(self, prompt: str, images, system: str | None) -> list[dict]:
        """Chat-template messages: images first, then the prompt (LLaVA's convention)."""
        msgs: list[dict] = []
        if system:
            msgs.append({"role": "system", "content": [{"type": "text", "text": system}]})
        content = [{"type": "image", "image": im.convert("RGB")} for im in (images or [])]
        content.append({"type": "text", "text": prompt})
        msgs.append({"role": "user", "content": content})
        return msgs

    def generate(self, prompt: str, images: list[Image.Image] | None = None, system: str | None = None) -> str:
        import torch

        msgs = self.messages(prompt, images, system)
        inputs = self.processor.apply_chat_template(
            msgs, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        inputs = {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in inputs.items()}
        with self._lock, torch.no_grad():
            self.requests += 1
            out = self.net.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new = out[0, inputs["input_ids"].shape[1]:]
        tok = getattr(self.processor, "tokenizer", self.processor)
        return clean_reply(tok.decode(new, skip_special_tokens=True))


def make_backend(kind: str, **opts) -> Backend:
    """``openai`` -> :class:`OpenAIBackend`, ``hf`` -> :class:`HFBackend` (options passed on)."""
    if kind == "openai":
        return OpenAIBackend(**opts)
    if kind == "hf":
        return HFBackend(**opts)
    raise ConfigError(f"unknown backend '{kind}'. Available: openai, hf")
