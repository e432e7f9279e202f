"""Registered description sets (descriptions:name=...), their download/cache/mirror paths, and
the data root (--data-root / LABELLESS_DATA) that makes recipes run unchanged."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import pytest

from labelless.errors import TextSourceError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def mirror(shared_data, monkeypatch):
    root = shared_data / "text"
    if not (root / "cupl").is_dir():
        pytest.skip("the description files are not in ../shared/data/text")
    monkeypatch.setenv("LABELLESS_TEXT_MIRROR", str(root))
    return root


def test_every_registered_set_resolves_from_the_mirror_with_its_checksum(mirror):
    from labelless.text import load_descriptions
    from labelless.text.resources import description_sets, fetch_description_set

    sets = description_sets()
    assert len(sets) >= 15
    for name, ds in sets.items():
        assert ds.url.startswith("https://raw.githubusercontent.com/") and ds.commit in ds.url
        p = fetch_description_set(name)
        assert p == mirror / ds.mirror_path
        assert hashlib.sha256(p.read_bytes()).hexdigest() == ds.sha256
        assert load_descriptions(p)  # a valid {class: [sentences]} file


def test_every_recipe_names_registered_sets_only():
    from labelless.text.resources import description_sets

    sets = description_sets()
    seen = 0
    for path in sorted((REPO / "recipes").rglob("*.yaml")):
        text = path.read_text()
        assert "../shared" not in text and "method-notes" not in text, path
        for name in re.findall(r"descriptions:name=([\w+/.-]+)", text):
            assert name in sets, (path, name)
            seen += 1
    assert seen >= 20


def test_eurosat_recipe_texts_cover_the_coop_classes(mirror, shared_data):
    from labelless.config import load_yaml
    from labelless.text import build_texts

    split = json.loads((shared_data / "text" / "coop_splits" / "split_zhou_EuroSAT.json").read_text())
    classes = sorted({c for _, _, c in split["test"]})
    spec = load_yaml(REPO / "recipes" / "fair" / "eurosat.yaml")["texts"]
    texts = build_texts(spec, classes)
    assert set(texts) == set(classes) and all(len(v) >= 10 for v in texts.values())


class _Reply(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_then_cache_then_offline(mirror, tmp_path, monkeypatch):
    import urllib.request

    from labelless.text.resources import description_sets, fetch_description_set

    ds = description_sets()["cupl/dtd"]
    body = (mirror / ds.mirror_path).read_bytes()
    monkeypatch.delenv("LABELLESS_TEXT_MIRROR")
    monkeypatch.setenv("LABELLESS_CACHE", str(tmp_path / "cache"))
    asked = []

    def fake(url, timeout=None):
        asked.append(url)
        return _Reply(body)

    monkeypatch.setattr(urllib.request, "urlopen", fake)
    p = fetch_description_set("cupl/dtd")
    assert asked == [ds.url] and p.read_bytes() == body and str(tmp_path / "cache") in str(p)

    def offline(url, timeout=None):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    assert fetch_description_set("cupl/dtd") == p  # cached: no network needed
    with pytest.raises(TextSourceError, match="LABELLESS_TEXT_MIRROR"):
        fetch_description_set("cupl/cifar10")  # not cached, offline: names the way out

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: _Reply(body + b" "))
    with pytest.raises(TextSourceError, match=description_sets()["cupl/food101"].sha256):
        fetch_description_set("cupl/food101")  # a changed upstream file is refused
    assert not list((tmp_path / "cache").rglob("food_prompts_full.json*"))


def test_bad_names_and_mirror_errors(tmp_path, monkeypatch):
    from labelless.text import build_texts

    monkeypatch.setenv("LABELLESS_TEXT_MIRROR", str(tmp_path))
    with pytest.raises(TextSourceError, match="does not exist"):
        build_texts("descriptions:name=cupl/dtd", ["banded"])
    with pytest.raises(TextSourceError, match="unknown description set 'cupl/eurosat'.*wca-cupl/eurosat"):
        build_texts("descriptions:name=cupl/eurosat", ["x"])
    with pytest.raises(TextSourceError, match="exactly one"):
        build_texts("descriptions:name=cupl/dtd,path=x.json", ["x"])


def test_data_root_resolves_relative_roots(shared_data, monkeypatch, tmp_path, capsys):
    from labelless.cli import main
    from labelless.data import build_dataset

    if not (shared_data / "eurosat" / "split_zhou_EuroSAT.json").is_file():
        pytest.skip("EuroSAT is not in ../shared/data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LABELLESS_DATA", raising=False)
    with pytest.raises(Exception, match="eurosat"):
        build_dataset("eurosat:root=eurosat,split=test,limit=4")
    monkeypatch.setenv("LABELLESS_DATA", str(shared_data))
    ds = build_dataset("eurosat:root=eurosat,split=test,limit=4")
    assert len(ds) == 4 and ds.root.startswith(str(shared_data / "eurosat"))
    # --data-root on the command line does the same for a recipe-style relative root
    monkeypatch.delenv("LABELLESS_DATA")
    rc = main(["zeroshot", "--model", "openclip:labelless-tiny:random", "--data-root", str(shared_data),
               "--data", "eurosat:root=eurosat,split=test,limit=6", "--out", str(tmp_path / "run"),
               "--no-progress", "--no-cache"])
    assert rc == 0, capsys.readouterr().err
    monkeypatch.delenv("LABELLESS_DATA")  # the CLI set it for its run
