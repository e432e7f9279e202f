"""describe-classes / describe-images against a misbehaving OpenAI-compatible server on the
loopback interface: a server that echoes the Authorization header in its error bodies never gets
the API key printed, logged or cached; outputs with missing items are not written (unless
--allow-partial) and the command fails; retries are counted in the summary line."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelless.cli import main

KEY = "sk-labelless-test-4f9c2a7e1b"


class _Server:
    def __init__(self):
        self.lock = threading.Lock()
        self.auth_seen: list[str] = []
        self.seen_prompts: dict[str, int] = {}


def _handler(state: _Server):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, code: int, body: dict):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            auth = self.headers.get("Authorization", "")
            content = req["messages"][-1]["content"]
            prompt = content if isinstance(content, str) else " ".join(
                p.get("text", "") for p in content if p.get("type") == "text")
            with state.lock:
                state.auth_seen.append(auth)
                n = state.seen_prompts[prompt] = state.seen_prompts.get(prompt, 0) + 1
            echo = {"error": {"message": f"request with Authorization: {auth} failed",
                              "headers": {"Authorization": auth, "api-key": KEY}}}
            ok = {"id": "x", "object": "chat.completion", "created": 0, "model": req["model"],
                  "choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": f"a reply about {prompt[:20]}"}}]}
            model = req["model"]
            if model == "echo500" or (model == "half" and "dog" in prompt):
                self._send(500, echo)
            elif model == "echo401":
                self._send(401, echo)
            elif model == "flaky" and n == 1:  # every prompt fails once, then succeeds
                self._send(503, {"error": {"message": "busy"}})
            else:
                self._send(200, ok)

    return Handler


@pytest.fixture
def server(monkeypatch):
    state = _Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("LABELLESS_LLM_BASE_URL", f"http://127.0.0.1:{httpd.server_address[1]}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    yield state
    httpd.shutdown()
    httpd.server_close()


def _describe_classes(capsys, tmp_path, model, *extra):
    out = tmp_path / f"{model}.json"
    rc = main(["describe-classes", "--classes", "cat,dog", "--out", str(out), "--samples", "1",
               "--no-progress", "--retries", "1", "--backoff", "0.01", "--llm-model", model, *extra])
    o, e = capsys.readouterr()
    return rc, o, e, out


@pytest.mark.parametrize("model", ["echo500", "echo401"])
def test_api_key_echoed_by_the_server_is_never_shown_logged_or_cached(capsys, caplog, tmp_path, server, model):
    caplog.set_level(logging.DEBUG)  # every logger, every level
    rc, out, err, path = _describe_classes(capsys, tmp_path, model)
    assert rc == 2
    assert any(KEY in a for a in server.auth_seen)  # the server did echo it back
    cache = Path(f"{path}.cache.jsonl").read_text()
    assert "failed" in cache and "***" in err + cache  # the errors are kept, the key masked
    for where, text in (("stdout", out), ("stderr", err), ("logs", caplog.text), ("reply cache", cache)):
        assert KEY not in text, where


def test_failed_classes_fail_the_command_and_write_nothing(capsys, tmp_path, server):
    rc, out, err, path = _describe_classes(capsys, tmp_path, "echo500")
    assert rc == 2 and not path.exists()  # before: exit 0, '{}' written
    assert "cat" in err and "dog" in err and "--allow-partial" in err
    assert "use it with" not in out

    rc, out, err, path = _describe_classes(capsys, tmp_path, "half")
    assert rc == 2 and not path.exists() and "dog" in err
    rc, out, err, path = _describe_classes(capsys, tmp_path, "half", "--allow-partial")
    assert rc == 0 and list(json.loads(path.read_text())) == ["cat"]
    assert "missing=template" in out  # the hint names how to use a partial file


def test_failed_images_fail_describe_images_and_write_nothing(capsys, tmp_path, server):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(imgs / f"{i}.png")
    out = tmp_path / "caps.json"
    rc = main(["describe-images", "--images", str(imgs), "--domain", "texture", "--out", str(out),
               "--no-progress", "--retries", "0", "--llm-model", "echo500"])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists() and "--allow-partial" in err


def test_retries_are_counted_in_the_summary(capsys, tmp_path, server):
    rc, out, err, path = _describe_classes(capsys, tmp_path, "flaky")
    assert rc == 0, err
    prompts = len(server.seen_prompts)  # 5 CuPL questions x 2 classes, each failed once
    assert prompts == 10
    assert f"{prompts} retries" in out
