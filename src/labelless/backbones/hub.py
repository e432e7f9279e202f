"""Weights from the Hugging Face hub without long waits or doubled log lines.

Without network, ``huggingface_hub`` retries every request five times with backoff (about 50 s
for one open_clip tag, which also asks for two file names) before it falls back to its local
cache. :func:`hub_access` checks once per process, within a few seconds, whether the hub (or
the proxy in between) accepts a connection; when it does not, the download runs in the hub's
offline mode: weights already in the local cache load at once, missing ones fail at once with
:class:`~labelless.errors.BackboneError` saying how to go on (``HF_HUB_OFFLINE=1``, a local
checkpoint). ``HF_HUB_OFFLINE=1`` set by the user skips the check.

The hub logs its retries on its own stderr handler; propagating them to the root logger as well
(which open_clip configures through ``logging.info``) printed every retry line twice, so the
propagation is switched off (the hub's documented setting).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
from urllib.parse import urlparse

from labelless.errors import BackboneError

PROBE_TIMEOUT_S = 4.0


@functools.lru_cache(maxsize=8)
def unreachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when a TCP connection to ``url``'s host (or to the HTTPS proxy, when one is set)
    opens within ``timeout`` seconds, else the reason (name resolution, refusal, timeout)."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy") or os.environ.get("ALL_PROXY")
    target = urlparse(proxy if proxy else url)
    host = target.hostname or ""
    port = target.port or (443 if target.scheme in ("https", "") else 80)
    result: list[str | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(None)
        except OSError as e:
            result.append(f"{e.strerror or type(e).__name__} for {host}:{port}")

    t = threading.Thread(target=probe, daemon=True)  # name resolution has no timeout of its own
    t.start()
    t.join(timeout + 1.0)
    return result[0] if result else f"no answer from {host}:{port} within {timeout:g} s"


def quiet_hub_logging() -> None:
    """Let the hub's log lines (e.g. "Retrying in 1s") print once, on its own handler."""
    try:
        from huggingface_hub.utils import logging as hub_logging
    except ImportError:  # pragma: no cover - huggingface_hub comes with open_clip/transformers
        return
    hub_logging.disable_propagation()


@contextlib.contextmanager
def _root_logger_handled():
    """Keep open_clip's module-level ``logging.error``/``info`` calls from installing a root
    handler (``logging.basicConfig``) that would print hub lines a second time and repeat our
    own error message."""
    root = logging.getLogger()
    null = None
    if not root.handlers:
        null = logging.NullHandler()
        root.addHandler(null)
    try:
        yield
    finally:
        if null is not None:
            root.removeHandler(null)


def offline_advice(local_spec: str) -> str:
    return (
        "Without network: download the weights once where there is network (they are kept in the "
        "Hugging Face cache, ~/.cache/huggingface or $HF_HOME) and set HF_HUB_OFFLINE=1 to use "
        f"that cache without waiting for the hub, or point the spec at local weights: {local_spec}."
    )


@contextlib.contextmanager
def hub_access(spec: str, local_spec: str):
    """Run a hub download for backbone ``spec`` without the long no-network wait (see the module
    docstring); ``local_spec`` is the offline alternative named in the error."""
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover
        yield
        return
    quiet_hub_logging()
    with _root_logger_handled():
        if constants.is_offline_mode():
            try:
                yield
            except Exception as e:
                raise BackboneError(
                    f"could not build backbone '{spec}': HF_HUB_OFFLINE is set and its weights are not "
                    f"in the local Hugging Face cache ({type(e).__name__}). {offline_advice(local_spec)}"
                ) from e
            return
        reason = unreachable(constants.ENDPOINT)
        if reason is None:
            yield
            return
        saved = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True  # read by huggingface_hub.constants.is_offline_mode()
        try:
            yield
        except Exception as e:
            raise BackboneError(
                f"could not build backbone '{spec}': the model hub {constants.ENDPOINT} cannot be "
                f"reached ({reason}) and its weights are not in the local Hugging Face cache. "
                f"{offline_advice(local_spec)}"
            ) from e
        finally:
            constants.HF_HUB_OFFLINE = saved


__all__ = ["hub_access", "offline_advice", "quiet_hub_logging", "unreachable"]
