"""An open_clip pretrained tag without network: a clear error within seconds (not ~50 s of
retries), saying how to go on offline; hub log lines print once. No network is used: the hub
endpoint is a closed loopback port, or the hub's offline mode is forced (the settings that
HF_ENDPOINT / HF_HUB_OFFLINE give it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from conftest import make_colour_folder

from labelless.cli import main

SPEC = "openclip:ViT-B-32:openai"


def _env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")}
    env.update(HF_HOME=str(tmp_path / "hf-home"), OMP_NUM_THREADS="1")  # an empty cache
    return env


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("how", ["unreachable hub", "HF_HUB_OFFLINE=1"])
def test_pretrained_tag_without_network_fails_fast_with_advice(tmp_path, capfd, monkeypatch, how):
    from huggingface_hub import constants

    # the values HF_HOME / HF_ENDPOINT / HF_HUB_OFFLINE set when the hub is imported
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # empty
    if how == "unreachable hub":
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    else:
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    data = make_colour_folder(tmp_path / "data", per_class=1)
    t0 = time.time()
    rc = main(["zeroshot", "--model", SPEC, "--data", f"imagefolder:root={data}",
               "--out", str(tmp_path / "run"), "--no-progress", "--no-cache"])
    seconds = time.time() - t0
    out, err = capfd.readouterr()
    assert rc == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    assert "HF_HUB_OFFLINE=1" in err and "openclip:ViT-B-32:/path/to/" in err and "local-dir:" in err
    assert "Retrying" not in err  # before: 5 retries per file name, each printed twice
    assert seconds < 20, seconds  # before: ~50 s of back-off


def test_hub_log_lines_print_once(tmp_path):
    """What doubled every retry line: open_clip logs through the root logger (which installs a
    root handler), and the hub's logger has its own handler and also propagated to the root."""
    script = (
        "import logging\n"
        "import labelless.backbones.openclip\n"
        "logging.info('open_clip: loading pretrained weights')\n"
        "from huggingface_hub.utils import logging as hub_logging\n"
        "hub_logging.get_logger('huggingface_hub.utils._http').warning('Retrying in 1s [Retry 1/5].')\n"
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env=_env(tmp_path), timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("Retrying in 1s [Retry 1/5].") == 1, p.stderr
