"""Text generation: the OpenAI-compatible client against a real loopback HTTP server, the
resumable cache (including a SIGKILLed run), collages, group planning, the local HF backend on
a tiny randomly initialised LLaVA, and the CLI plumbing."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelless.errors import ConfigError
from labelless.textgen import (
    GROUP_PROMPT,
    IMAGE_PROMPT,
    OpenAIBackend,
    ReplyCache,
    RequestError,
    RetryPolicy,
    TextGenError,
    collage_grid,
    describe_classes,
    describe_groups,
    describe_images,
    make_collage,
    plan_groups,
)

# ------------------------------------------------------------------------------ loopback server


class _State:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests: list[dict] = []  # {"model", "images": [sha of data url], "prompt"}
        self.counts: dict[str, int] = {}
        self.times: list[float] = []


def _image_ids(messages) -> list[str]:
    ids = []
    for m in messages:
        if isinstance(m.get("content"), list):
            for part in m["content"]:
                if part.get("type") == "image_url":
                    url = part["image_url"]["url"]
                    assert url.startswith("data:image/png;base64,")
                    ids.append(hashlib.sha256(base64.b64decode(url.split(",", 1)[1])).hexdigest()[:12])
    return ids


def _prompt(messages) -> str:
    content = messages[-1]["content"]
    if isinstance(content, str):
        return content
    return " ".join(p["text"] for p in content if p.get("type") == "text")


def _make_handler(state: _State):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):  # keep pytest output clean
            pass

        def _send(self, code: int, body: bytes, ctype="application/json", headers=None):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _reply(self, text):
            body = {
                "id": "x", "object": "chat.completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
            }
            self._send(200, json.dumps(body).encode())

        def do_POST(self):
            n = int(self.headers.get("Content-Length", 0))
            req = json.loads(self.rfile.read(n))
            assert self.path.endswith("/chat/completions")
            model = req["model"]
            with state.lock:
                k = state.counts[model] = state.counts.get(model, 0) + 1
                state.requests.append(
                    {"model": model, "images": _image_ids(req["messages"]), "prompt": _prompt(req["messages"]),
                     "auth": self.headers.get("Authorization")}
                )
            ids = _image_ids(req["messages"])
            good = f"a thing seen in {ids[0] if ids else 'text'} for: {_prompt(req['messages'])[:30]}"
            if model == "good":
                self._reply(good)
            elif model == "slowish":  # for the kill/resume test: each reply takes a while
                time.sleep(0.15)
                self._reply(good)
            elif model == "slow":
                time.sleep(1.5)
                self._reply(good)
            elif model == "rate-then-ok":
                if k <= 2:
                    self._send(429, b'{"error": {"message": "slow down"}}', headers={"Retry-After": "0"})
                else:
                    self._reply(good)
            elif model == "rate-after-1s":
                state.times.append(time.monotonic())
                if k == 1:
                    self._send(429, b'{"error": {"message": "slow down"}}', headers={"Retry-After": "1"})
                else:
                    self._reply(good)
            elif model == "err500":
                self._send(500, b'{"error": {"message": "boom"}}')
            elif model == "malformed-then-ok":
                if k == 1:
                    self._send(200, b'{"choices": [ {"message": ')
                else:
                    self._reply(good)
            elif model == "malformed":
                self._send(200, b"<html>not json</html>", ctype="text/html")
            elif model == "empty-then-ok":
                self._reply("   " if k == 1 else good)
            elif model == "empty":
                self._reply("")
            elif model == "missing":
                self._send(404, b'{"error": {"message": "model not found"}}')
            else:
                self._send(400, b'{"error": {"message": "unknown test model"}}')

    return Handler


@pytest.fixture
def server():
    state = _State()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield state
    httpd.shutdown()
    httpd.server_close()


def _backend(server, model, retries=2, timeout=5.0, **kw):
    return OpenAIBackend(model=model, base_url=server.url, api_key="sk-test-secret", timeout=timeout,
                         retry=RetryPolicy(max_retries=retries, backoff=0.01, max_backoff=0.05), **kw)


def _images(root: Path, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
        p = root / f"img_{i:03d}.png"
        Image.fromarray(arr).save(p)
        paths.append(str(p))
    return paths


# ------------------------------------------------------------------------------ client behaviour


def test_good_reply_sends_image_and_prompt(server, tmp_path):
    paths = _images(tmp_path / "imgs", 3)
    b = _backend(server, "good")
    with ReplyCache(tmp_path / "c.jsonl") as cache:
        caps, report = describe_images(paths, b, cache, domain="car", root=str(tmp_path / "imgs"),
                                       workers=2, progress=False)
    assert sorted(caps) == ["img_000.png", "img_001.png", "img_002.png"]
    assert len(server.requests) == 3 and report.requested == 3 and not report.failures
    expected_prompt = IMAGE_PROMPT.replace("{domain}", "car")
    assert {r["prompt"] for r in server.requests} == {expected_prompt}
    # the image that travelled is the file's pixels (PNG re-encoded): one image per request
    assert all(len(r["images"]) == 1 for r in server.requests)
    assert all(caps[k][0].startswith("a thing seen in") for k in caps)
    # the key reaches the server but never the cache file
    assert server.requests[0]["auth"] == "Bearer sk-test-secret"
    assert "sk-test-secret" not in (tmp_path / "c.jsonl").read_text()


def test_rate_limit_then_success(server):
    b = _backend(server, "rate-then-ok", retries=3)
    assert b.generate("hello").startswith("a thing")
    assert server.counts["rate-then-ok"] == 3


def test_retry_after_is_honoured_and_retries_are_counted_and_logged(server, caplog):
    b = _backend(server, "rate-after-1s", retries=3)
    with caplog.at_level("INFO", logger="labelless"):
        assert b.generate("hello").startswith("a thing")
    # the client's own backoff before a first retry is at most 0.5 s: a 1 s gap is the header's
    assert server.counts["rate-after-1s"] == 2 and server.times[1] - server.times[0] >= 0.95
    assert b.requests == 2
    assert "HTTP 429: retry 1 of 3" in caplog.text


def test_server_errors_give_up_after_bounded_retries(server):
    b = _backend(server, "err500", retries=2)
    with pytest.raises(TextGenError, match="gave up after 3 attempts.*500"):
        b.generate("hello")
    assert server.counts["err500"] == 3


def test_timeout_is_retried_then_fails(server):
    b = _backend(server, "slow", retries=1, timeout=0.3)
    t0 = time.time()
    with pytest.raises(TextGenError, match="timed out"):
        b.generate("hello")
    assert time.time() - t0 < 3.0
    assert server.counts["slow"] == 2


def test_malformed_and_empty_replies_are_retried_never_used(server):
    assert _backend(server, "malformed-then-ok").generate("x").startswith("a thing")
    assert server.counts["malformed-then-ok"] == 2
    assert _backend(server, "empty-then-ok").generate("x").startswith("a thing")
    assert server.counts["empty-then-ok"] == 2
    with pytest.raises(TextGenError, match="malformed|not a JSON"):
        _backend(server, "malformed", retries=1).generate("x")
    assert server.counts["malformed"] == 2
    with pytest.raises(TextGenError, match="empty reply"):
        _backend(server, "empty", retries=1).generate("x")
    assert server.counts["empty"] == 2


def test_client_error_is_not_retried_and_stops_the_run(server, tmp_path):
    paths = _images(tmp_path / "imgs", 6)
    b = _backend(server, "missing", retries=5)
    with ReplyCache(tmp_path / "c.jsonl") as cache, pytest.raises(RequestError, match="HTTP 404.*model name"):
        describe_images(paths, b, cache, domain="car", workers=2, progress=False)
    assert server.counts["missing"] <= 2  # at most the requests already in flight


def test_failures_are_recorded_and_retried_next_run(server, tmp_path):
    paths = _images(tmp_path / "imgs", 2)
    with ReplyCache(tmp_path / "c.jsonl") as cache:
        caps, report = describe_images(paths, _backend(server, "empty", retries=0), cache, domain="car",
                                       workers=1, progress=False)
    assert caps == {} and len(report.failures) == 2
    lines = [json.loads(x) for x in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert [rec["ok"] for rec in lines] == [False, False]
    with ReplyCache(tmp_path / "c.jsonl") as cache:
        assert len(cache.failed) == 2 and not cache.done


def test_cache_never_pays_twice_and_keys_on_content_and_model(server, tmp_path):
    paths = _images(tmp_path / "imgs", 4)
    # a renamed copy of an image has the same content: no new request
    Image.open(paths[0]).save(tmp_path / "imgs" / "copy.png")
    paths.append(str(tmp_path / "imgs" / "copy.png"))
    with ReplyCache(tmp_path / "c.jsonl") as cache:
        caps, _ = describe_images(paths, _backend(server, "good"), cache, domain="car", progress=False)
    assert len(server.requests) == 4 and len(caps) == 5
    with ReplyCache(tmp_path / "c.jsonl") as cache:
        caps2, rep = describe_images(paths, _backend(server, "good"), cache, domain="car", progress=False)
        assert caps2 == caps and rep.cached == 4 and len(server.requests) == 4
        describe_images(paths, _backend(server, "good"), cache, domain="flower", progress=False)
        assert len(server.requests) == 8  # another prompt is another key


def test_describe_classes_cupl_shape(server, tmp_path):
    with ReplyCache(tmp_path / "c.jsonl") as cache:
        texts, report = describe_classes(["cat", "dog"], _backend(server, "good"), cache,
                                         questions=("What does a {c} look like?",), samples=2,
                                         progress=False)
    assert list(texts) == ["cat", "dog"]
    assert texts["cat"] == ["a thing seen in text for: What does a cat look like?"]  # duplicates dropped
    assert len(server.requests) == 4 and report.requested == 4


# ------------------------------------------------------------------------------ kill and resume

_WORKER = """
import sys
from labelless.textgen import OpenAIBackend, ReplyCache, RetryPolicy, describe_images
url, cache_path, *paths = sys.argv[1:]
b = OpenAIBackend(model="slowish", base_url=url, api_key="k", timeout=5,
                  retry=RetryPolicy(max_retries=0, backoff=0.01))
with ReplyCache(cache_path) as cache:
    describe_images(paths, b, cache, domain="car", workers=2, progress=False)
print("finished")
"""


def test_resume_after_sigkill_requests_no_image_twice(server, tmp_path):
    paths = _images(tmp_path / "imgs", 16)
    cache_path = tmp_path / "cache.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", _WORKER, server.url, str(cache_path), *paths],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 30
    while time.time() < deadline:
        if cache_path.exists() and len(cache_path.read_text().splitlines()) >= 4:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    first_run = list(server.requests)
    # simulate a record cut mid-write by the kill
    with open(cache_path, "a") as f:
        f.write('{"key": "abc", "ok": tr')
    with ReplyCache(cache_path) as cache:
        done_before = len(cache.done)
        assert 4 <= done_before < 16 and cache.corrupt_lines == 1
        # the server's reply names the image it saw: which images the killed run recorded
        recorded = {text.split()[4] for text in cache.done.values()}
        assert len(recorded) == done_before
        b = OpenAIBackend(model="slowish", base_url=server.url, api_key="k", timeout=5)
        caps, report = describe_images(paths, b, cache, domain="car", workers=2, progress=False)
    assert len(caps) == 16 and report.cached == done_before
    resumed = [r["images"][0] for r in server.requests[len(first_run):]]
    assert len(resumed) == 16 - done_before == len(set(resumed))
    assert not recorded & set(resumed)  # nothing recorded is paid for twice
    good = [x for x in cache_path.read_text().splitlines() if x.endswith("}")]
    assert sum(json.loads(x)["ok"] for x in good if x.startswith('{"key"') and '"ok": tr' in x) == 16


# ------------------------------------------------------------------------------ collage & groups


def test_collage_geometry():
    assert collage_grid(1) == (1, 1) and collage_grid(4) == (2, 2) and collage_grid(3) == (2, 2)
    assert collage_grid(5) == (3, 2) and collage_grid(16) == (4, 4)
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    imgs = [Image.new("RGB", (40 + 10 * i, 30), c) for i, c in enumerate(colours)]
    col = make_collage(imgs, size=672)
    assert col.size == (672, 672)
    # row-major tiles of 336 px, each fully covered by its image (centre-cropped, not stretched)
    for i, c in enumerate(colours):
        r, k = divmod(i, 2)
        assert col.getpixel((k * 336 + 5, r * 336 + 5)) == c
        assert col.getpixel((k * 336 + 330, r * 336 + 330)) == c
    three = make_collage(imgs[:3], size=100)
    assert three.size == (100, 100) and three.getpixel((75, 75)) == (0, 0, 0)  # empty cell
    with pytest.raises(ConfigError):
        make_collage([], size=100)


def test_plan_groups_share_pseudo_labels():
    paths = [f"p{i}" for i in range(10)]
    labels = ["a"] * 6 + ["b"] * 3 + ["c"]
    groups = plan_groups(paths, labels, group_size=4, seed=1)
    assert len(groups) == 10
    for g, p, c in zip(groups, paths, labels):
        assert g["anchor"] == p and g["images"][0] == p and g["class"] == c
        assert all(labels[paths.index(q)] == c for q in g["images"])
        assert len(set(g["images"])) == len(g["images"])
    assert [len(g["images"]) for g in groups] == [4] * 6 + [3] * 3 + [1]
    assert plan_groups(paths, labels, group_size=4, seed=1) == groups
    per = plan_groups(paths, labels, group_size=2, per_class=3, seed=0)
    assert len(per) == 9 and all(len(g["images"]) <= 2 for g in per)


def test_describe_groups_sends_one_collage_per_group(server, tmp_path):
    paths = _images(tmp_path / "imgs", 6)
    groups = plan_groups(paths, ["x"] * 3 + ["y"] * 3, group_size=3, per_class=1)
    with ReplyCache(tmp_path / "g.jsonl") as cache:
        doc, report = describe_groups(groups, _backend(server, "good"), cache, domain="car",
                                      collage_size=64, root=str(tmp_path / "imgs"), progress=False)
    assert len(doc["groups"]) == 2 and report.requested == 2
    assert doc["prompt"] == GROUP_PROMPT.replace("{domain}", "car")
    assert {g["class"] for g in doc["groups"]} == {"x", "y"}
    assert all(len(r["images"]) == 1 for r in server.requests)  # one collage image per request
    assert all(not os.path.isabs(p) for g in doc["groups"] for p in g["images"])


# ------------------------------------------------------------------------------ HF backend


def _tiny_llava():
    """A randomly initialised tiny LLaVA with a word-level tokenizer built offline."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    words = ["<unk>", "<s>", "</s>", "<image>", "USER:", "ASSISTANT:", "describe", "the", "car",
             "a", "red", "photo", "in", "."]
    tk = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="##")
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>",
                                  eos_token="</s>", pad_token="<unk>")
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    chat = ("{% for m in messages %}{% if m['role'] == 'user' %}USER: {% for c in m['content'] %}"
            "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}"
            "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}")
    ip = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=8, chat_template=chat,
                          vision_feature_select_strategy="default", num_additional_image_tokens=1)
    vc = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                          num_attention_heads=2, image_size=16, patch_size=8, projection_dim=16)
    tc = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                     num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                     bos_token_id=1, eos_token_id=2, pad_token_id=0)
    cfg = LlavaConfig(vision_config=vc, text_config=tc, vision_feature_layer=-1,
                      image_token_index=tok.convert_tokens_to_ids("<image>"),
                      vision_feature_select_strategy="default")
    torch.manual_seed(0)
    return LlavaForConditionalGeneration(cfg).eval(), proc


def test_hf_backend_tiny_llava(tmp_path):
    from labelless.textgen import BadReplyError, HFBackend

    model, proc = _tiny_llava()
    b = HFBackend("tiny-llava", model_obj=model, processor=proc, max_new_tokens=4, device="cpu")
    img = Image.new("RGB", (20, 20), (200, 10, 10))
    msgs = b.messages("describe the car", [img], None)
    assert [c["type"] for c in msgs[0]["content"]] == ["image", "text"]
    inputs = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True,
                                      return_dict=True, return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, 16, 16)
    try:
        first = b.generate("describe the car", [img])
    except BadReplyError:  # a random model may emit only special tokens: recorded, never used
        first = None
    if first is not None:
        assert first == b.generate("describe the car", [img])  # greedy: deterministic
        assert set(first.split()) <= {"<unk>", "describe", "the", "car", "a", "red", "photo", "in", ".",
                                      "USER:", "ASSISTANT:"}
    # a collage goes through the same path as one image
    paths = _images(tmp_path / "imgs", 4)
    groups = plan_groups(paths, ["k"] * 4, group_size=4, per_class=1)
    with ReplyCache(tmp_path / "c.jsonl") as cache:
        doc, report = describe_groups(groups, b, cache, domain="car", collage_size=32, progress=False)
    assert report.requested + len(report.failures) == 1


# ------------------------------------------------------------------------------ CLI


def test_cli_describe_images_and_classes(server, tmp_path, monkeypatch, capsys):
    import argparse

    from labelless.textgen.cli import add_commands

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd")
    add_commands(sub)
    imgs = tmp_path / "imgs"
    paths = _images(imgs / "sub", 4)
    labels = {os.path.relpath(p, imgs): ("a" if i < 2 else "b") for i, p in enumerate(paths)}
    (tmp_path / "pl.json").write_text(json.dumps(labels))
    monkeypatch.setenv("LABELLESS_LLM_BASE_URL", server.url)
    monkeypatch.setenv("LABELLESS_LLM_MODEL", "good")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-printed")
    args = parser.parse_args([
        "describe-images", "--images", str(imgs), "--domain", "texture", "--out", str(tmp_path / "caps.json"),
        "--groups-out", str(tmp_path / "groups.json"), "--pseudo-labels", str(tmp_path / "pl.json"),
        "--group-size", "2", "--no-progress", "--backoff", "0.01",
    ])
    args.func(args)
    caps = json.loads((tmp_path / "caps.json").read_text())
    assert sorted(caps) == sorted(labels)
    groups = json.loads((tmp_path / "groups.json").read_text())
    assert len(groups["groups"]) == 4 and {g["class"] for g in groups["groups"]} == {"a", "b"}
    args = parser.parse_args(["describe-classes", "--classes", "cat,dog", "--out", str(tmp_path / "d.json"),
                              "--samples", "1", "--no-progress"])
    args.func(args)
    d = json.loads((tmp_path / "d.json").read_text())
    assert list(d) == ["cat", "dog"] and len(d["cat"]) == 5
    out = capsys.readouterr().out
    assert "sk-never-printed" not in out
    for f in tmp_path.glob("*.jsonl"):
        assert "sk-never-printed" not in f.read_text()


def test_describe_classes_shards_over_torchrun_ranks(server, tmp_path):
    """2 ranks split the requests (each runs once in total), rank 0 writes the same output a
    single process writes, and the per-rank reply files are folded into the main cache."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this python")
    env = {**os.environ, "LABELLESS_LLM_BASE_URL": server.url, "LABELLESS_LLM_MODEL": "good",
           "OPENAI_API_KEY": "sk-test", "OMP_NUM_THREADS": "1"}
    args = ["describe-classes", "--classes", "cat,dog,fox", "--samples", "1", "--no-progress"]
    subprocess.run([sys.executable, "-m", "labelless.cli", *args, "--out", str(tmp_path / "single.json")],
                   check=True, env=env, timeout=300, capture_output=True)
    n_single = len(server.requests)
    assert n_single == 15  # 5 CuPL questions x 3 classes x 1 sample
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "labelless.cli", *args,
                           "--out", str(tmp_path / "multi.json")], env=env, timeout=300, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(server.requests) == 2 * n_single  # every request once, split over the ranks
    assert proc.stdout.count("wrote ") == 1  # rank 0 alone writes
    assert json.loads((tmp_path / "multi.json").read_text()) == json.loads((tmp_path / "single.json").read_text())
    assert not list(tmp_path.glob("multi.json.cache.jsonl.rank*"))
    with ReplyCache(tmp_path / "multi.json.cache.jsonl") as cache:
        assert len(cache.done) == n_single


# ------------------------------------------------------------------------------ CODER style


class _ListBackend:
    """An in-process backend that answers every CODER question with a fixed list per prompt."""

    def __init__(self, fail=()):
        self.prompts: list[tuple[str, str | None]] = []
        self.fail = tuple(fail)

    def identity(self) -> dict:
        return {"backend": "list-test"}

    def generate(self, prompt, images=None, system=None):
        from labelless.textgen.backends import TransientError

        self.prompts.append((prompt, system))
        if any(f in prompt for f in self.fail):
            raise TransientError("down")
        if prompt.startswith("What are the synonyms"):
            return "- kitty\n- feline."
        if prompt.startswith("What are useful"):
            return "Features:\n1. pointed ears\n2) whiskers\n- whiskers"
        if prompt.startswith("What other objects"):
            return "tiger, lynx"
        return "* a longer tail" if "between the cat" in prompt else "* floppy ears"


def test_coder_list_parsing():
    from labelless.textgen.coder import parse_list

    assert parse_list("1. Pointed ears.\n2) whiskers\n\n- whiskers\n* Soft fur") == ["Pointed ears", "whiskers", "Soft fur"]
    assert parse_list("Here are some:\n_tiger\n_lynx") == ["tiger", "lynx"]
    assert parse_list("tiger, lynx, ocelot") == ["tiger", "lynx", "ocelot"]
    assert parse_list("") == []


def test_describe_classes_coder_five_types(tmp_path):
    """Every class gets CODER's five types: name, synonyms, attributes, similar objects and one
    one-vs-one question per ordered pair of classes, filled into CODER's templates."""
    from labelless.textgen.coder import CODER_SYSTEM, describe_classes_coder

    backend = _ListBackend()
    with ReplyCache(tmp_path / "c.jsonl") as cache:
        texts, report = describe_classes_coder(["cat", "dog", "fox"], backend, cache, progress=False)
    assert report.requested == 3 * 3 + 3 * 2 and len(backend.prompts) == 15  # 3 types + 2 pairs each
    assert {s for _, s in backend.prompts} == {CODER_SYSTEM}
    assert texts["cat"] == [
        "a photo of cat", "a photo of kitty", "a photo of feline",
        "cat which has pointed ears", "cat which has whiskers",
        "a cat similar to tiger.", "a cat similar to lynx.",
        "Because of a longer tail, cat is different from dog.",
        "Because of a longer tail, cat is different from fox.",
    ]
    assert texts["dog"][-2:] == ["Because of floppy ears, dog is different from cat.",
                                 "Because of floppy ears, dog is different from fox."]
    # a class with any failed request is left out (not passed off as complete)
    with ReplyCache(tmp_path / "d.jsonl") as cache:
        texts, report = describe_classes_coder(["cat", "dog", "fox"], _ListBackend(fail=("the fox and",)),
                                               cache, progress=False, workers=1)
    assert sorted(texts) == ["cat", "dog"] and report.failures


def test_describe_classes_cli_style_coder(server, tmp_path, monkeypatch):
    import argparse

    from labelless.textgen.cli import add_commands

    monkeypatch.setenv("LABELLESS_LLM_BASE_URL", server.url)
    monkeypatch.setenv("LABELLESS_LLM_MODEL", "good")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="cmd"))
    out = tmp_path / "coder.json"
    args = parser.parse_args(["describe-classes", "--style", "coder", "--classes", "cat,dog", "--out", str(out),
                              "--no-progress", "--backoff", "0.01"])
    args.func(args)
    d = json.loads(out.read_text())
    assert list(d) == ["cat", "dog"] and d["cat"][0] == "a photo of cat"
    assert len(server.requests) == 2 * 3 + 2  # samples default to 1 for coder
    assert any(s.endswith("is different from dog.") for s in d["cat"])
    args = parser.parse_args(["describe-classes", "--style", "coder", "--classes", "cat", "--out", str(out),
                              "--questions", str(tmp_path / "q.json")])
    with pytest.raises(ConfigError, match="--questions"):
        args.func(args)
