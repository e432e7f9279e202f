"""Text sources: every spec on tiny files, error messages, the shipped real description files."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch

from labelless.errors import ConfigError, TextSourceError, UnknownNameError
from labelless.registry import TEXT_SOURCES
from labelless.text import (
    TEMPLATE_SETS,
    ClassTexts,
    build_texts,
    builtin_alias_sets,
    encode_class_texts,
    load_aliases,
    load_captions,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TEXT = SHARED / "data" / "text"
EUROSAT = [
    "Annual Crop Land",
    "Forest",
    "Herbaceous Vegetation Land",
    "Highway or Road",
    "Industrial Buildings",
    "Pasture Land",
    "Permanent Crop Land",
    "Residential Buildings",
    "River",
    "Sea or Lake",
]
needs_shared = pytest.mark.skipif(not TEXT.is_dir(), reason="shared text data not present")


def write(tmp_path: Path, name: str, obj) -> str:
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
    return str(p)


# ---------------------------------------------------------------------------- registry, names


def test_sources_registered_with_help():
    for name in ("names", "templates", "descriptions", "captions"):
        assert name in TEXT_SOURCES
        assert TEXT_SOURCES.describe(name)


def test_unknown_source_suggests():
    with pytest.raises(UnknownNameError, match="Did you mean 'templates'"):
        build_texts("template:name=clip", ["a"])


def test_names_keeps_class_order():
    out = build_texts("names", ["zebra", "apple"])
    assert out == {"zebra": ["zebra"], "apple": ["apple"]}
    assert list(out) == ["zebra", "apple"]


def test_bad_class_lists():
    with pytest.raises(TextSourceError, match="empty"):
        build_texts("names", [])
    with pytest.raises(TextSourceError, match="duplicate.*'a'"):
        build_texts("names", ["a", "b", "a"])


def test_unknown_option_suggests():
    with pytest.raises(TextSourceError, match="no option 'nmae'.*Did you mean 'name'"):
        build_texts("templates:nmae=clip", ["a"])
    with pytest.raises(TextSourceError, match="no option"):
        build_texts("names:x=1", ["a"])


def test_bad_spec_syntax():
    with pytest.raises(ConfigError):
        build_texts("templates:name", ["a"])


# ---------------------------------------------------------------------------- templates


def test_builtin_template_sets():
    assert len(TEMPLATE_SETS["imagenet"]) == 80
    assert len(set(TEMPLATE_SETS["imagenet"])) == 80
    assert len(TEMPLATE_SETS["openai-ensemble"]) == 7
    assert set(TEMPLATE_SETS["openai-ensemble"]) <= set(TEMPLATE_SETS["imagenet"])
    assert TEMPLATE_SETS["clip"] == ("a photo of a {c}.",)
    for name, ts in TEMPLATE_SETS.items():
        assert ts and all("{c}" in t for t in ts), name


@pytest.mark.parametrize(
    "name, expected",
    [
        ("clip", "a photo of a River."),
        ("eurosat", "a centered satellite photo of River."),
        ("dtd", "River texture."),
        ("oxford_flowers", "a photo of a River, a type of flower."),
        ("oxford_pets", "a photo of a River, a type of pet."),
        ("fgvc_aircraft", "a photo of a River, a type of aircraft."),
        ("food101", "a photo of River, a type of food."),
        ("ucf101", "a photo of a person doing River."),
        ("caltech101", "a photo of a River."),
        ("sun397", "a photo of a River."),
        ("stanford_cars", "a photo of a River."),
    ],
)
def test_single_template_sets(name, expected):
    assert build_texts(f"templates:name={name}", ["River"]) == {"River": [expected]}


def test_imagenet_templates_expand():
    out = build_texts("templates:name=imagenet", ["cat", "dog"])
    assert len(out["cat"]) == 80 and out["dog"][0] == "a bad photo of a dog."
    assert out["cat"][-1] == "a tattoo of the cat."


def test_unknown_template_set():
    with pytest.raises(TextSourceError, match="Did you mean 'imagenet'.*Built-in sets"):
        build_texts("templates:name=imagnet", ["a"])


def test_template_file_both_placeholders(tmp_path):
    f = write(tmp_path, "t.json", ["{} photo.", "a {c} {c}.", "{not a placeholder} {}"])
    out = build_texts(f"templates:file={f}", ["x", "y"])
    assert out == {
        "x": ["x photo.", "a x x.", "{not a placeholder} x"],
        "y": ["y photo.", "a y y.", "{not a placeholder} y"],
    }


def test_template_file_with_key(tmp_path):
    f = write(tmp_path, "t.json", {"a": ["{} one."], "b": ["{} two.", "{} three."]})
    assert build_texts(f"templates:file={f},key=b", ["x"]) == {"x": ["x two.", "x three."]}
    with pytest.raises(TextSourceError, match="no key 'c'"):
        build_texts(f"templates:file={f},key=c", ["x"])
    with pytest.raises(TextSourceError, match="key=NAME"):
        build_texts(f"templates:file={f}", ["x"])


def test_template_file_errors(tmp_path):
    with pytest.raises(TextSourceError, match="no class placeholder"):
        build_texts(f"templates:file={write(tmp_path, 'a.json', ['a photo.'])}", ["x"])
    with pytest.raises(TextSourceError, match="empty"):
        build_texts(f"templates:file={write(tmp_path, 'b.json', [])}", ["x"])
    with pytest.raises(TextSourceError, match="not valid JSON"):
        build_texts(f"templates:file={write(tmp_path, 'c.json', '[1,')}", ["x"])
    with pytest.raises(TextSourceError, match="template #1 is a int"):
        build_texts(f"templates:file={write(tmp_path, 'd.json', ['{}', 3])}", ["x"])
    with pytest.raises(TextSourceError, match="does not exist"):
        build_texts(f"templates:file={tmp_path / 'nope.json'}", ["x"])
    with pytest.raises(TextSourceError, match="exactly one"):
        build_texts("templates", ["x"])


# ---------------------------------------------------------------------------- descriptions


def test_descriptions_exact(tmp_path):
    f = write(tmp_path, "d.json", {"b": ["b is round.", "b is red."], "a": ["a is flat."]})
    out = build_texts(f"descriptions:path={f}", ["a", "b"])
    assert out == {"a": ["a is flat."], "b": ["b is round.", "b is red."]}
    assert list(out) == ["a", "b"]


def test_descriptions_mismatch_names_and_suggests(tmp_path):
    f = write(
        tmp_path,
        "d.json",
        {"lake or sea": ["water."], "forest": ["trees."], "volcano": ["lava."]},
    )
    with pytest.raises(TextSourceError) as exc:
        build_texts(f"descriptions:path={f}", ["Sea or Lake", "Forest"])
    msg = str(exc.value)
    assert str(f) in msg
    assert "class 'Sea or Lake' has no descriptions; closest key: 'lake or sea'" in msg
    assert "class 'Forest' has no descriptions; closest key: 'forest'" in msg
    assert "unused keys in the file: 'lake or sea', 'forest', 'volcano'" in msg
    assert "aliases=" in msg and "normalize=" in msg


def test_descriptions_normalize(tmp_path):
    f = write(tmp_path, "d.json", {"great_dane": ["big dog."], "PUG": ["small dog."]})
    with pytest.raises(TextSourceError):
        build_texts(f"descriptions:path={f}", ["Great Dane", "pug"])
    with pytest.raises(TextSourceError, match="'Great Dane'"):
        build_texts(f"descriptions:path={f},normalize=lower", ["Great Dane", "pug"])
    out = build_texts(f"descriptions:path={f},normalize=underscores", ["Great Dane", "pug"])
    assert out == {"Great Dane": ["big dog."], "pug": ["small dog."]}
    with pytest.raises(TextSourceError, match="normalize='upper'"):
        build_texts(f"descriptions:path={f},normalize=upper", ["pug"])


def test_descriptions_normalize_collision(tmp_path):
    f = write(tmp_path, "d.json", {"pug": ["a."], "PUG": ["b."]})
    with pytest.raises(TextSourceError, match="both match class 'pug'"):
        build_texts(f"descriptions:path={f},normalize=lower", ["pug"])


def test_descriptions_aliases_file_and_merge(tmp_path):
    f = write(tmp_path, "d.json", {"lake": ["still."], "sea": ["salty."], "wood": ["trees."]})
    a = write(tmp_path, "a.json", {"lake": "Sea or Lake", "sea": "Sea or Lake", "wood": "Forest"})
    out = build_texts(f"descriptions:path={f},aliases={a}", ["Forest", "Sea or Lake"])
    assert out == {"Forest": ["trees."], "Sea or Lake": ["still.", "salty."]}


def test_descriptions_alias_to_unknown_class_is_reported(tmp_path):
    f = write(tmp_path, "d.json", {"wood": ["trees."]})
    a = write(tmp_path, "a.json", {"wood": "Forrest"})
    with pytest.raises(TextSourceError, match=r"wood \(alias -> 'Forrest'\)"):
        build_texts(f"descriptions:path={f},aliases={a}", ["Forest"])


def test_descriptions_bad_aliases(tmp_path):
    f = write(tmp_path, "d.json", {"a": ["x."]})
    with pytest.raises(TextSourceError, match="Did you mean 'eurosat-wca'"):
        build_texts(f"descriptions:path={f},aliases=eurosat-wcb", ["a"])
    bad = write(tmp_path, "bad.json", {"a": 1})
    with pytest.raises(TextSourceError, match="file_key: class_name"):
        build_texts(f"descriptions:path={f},aliases={bad}", ["a"])


def test_descriptions_missing_fill(tmp_path, lablog):
    f = write(tmp_path, "d.json", {"a": ["x."]})
    out = build_texts(f"descriptions:path={f},missing=template", ["a", "B", "c"])
    assert re.search("2 of 3 classes.*: B, c", lablog.text)
    assert out == {"a": ["x."], "B": ["a photo of a B."], "c": ["a photo of a c."]}
    lablog.clear()
    out = build_texts(f"descriptions:path={f},missing=names", ["a", "B", "c"])
    assert "2 of 3 classes" in lablog.text
    assert out == {"a": ["x."], "B": ["B"], "c": ["c"]}
    lablog.clear()
    out = build_texts(f"descriptions:path={f},fallback=template", ["a", "z"])
    assert "1 of 2 classes" in lablog.text
    assert out["z"] == ["a photo of a z."]
    with pytest.raises(TextSourceError, match="missing='maybe'"):
        build_texts(f"descriptions:path={f},missing=maybe", ["a"])


def test_descriptions_no_warning_when_complete(tmp_path, lablog):
    f = write(tmp_path, "d.json", {"a": ["x."]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_texts(f"descriptions:path={f},missing=template", ["a"])
    assert not [r for r in lablog.records if r.levelname == "WARNING"]


def test_descriptions_prefix(tmp_path):
    f = write(tmp_path, "d.json", {"cat": ["It purrs.", "It has whiskers."]})
    out = build_texts(f"descriptions:path={f},prefix={{c}}:", ["cat"])
    assert out == {"cat": ["cat: It purrs.", "cat: It has whiskers."]}


@pytest.mark.parametrize(
    "content, match",
    [
        ({"a": []}, "class 'a': no sentences"),
        ({"a": ["ok", 3]}, "class 'a': sentence #1 is 3"),
        ({"a": ["ok", "  "]}, "class 'a': sentence #1"),
        ({"a": "one sentence"}, "class 'a': expected a list"),
        (["a", "b"], "expected a JSON object"),
        ({}, "is empty"),
        ("{not json", "not valid JSON"),
    ],
)
def test_descriptions_bad_files(tmp_path, content, match):
    f = write(tmp_path, "bad.json", content)
    with pytest.raises(TextSourceError, match=match) as exc:
        build_texts(f"descriptions:path={f}", ["a"])
    assert str(f) in str(exc.value)


def test_descriptions_requires_path():
    with pytest.raises(TextSourceError, match="give path=F.json .* or name=SET"):
        build_texts("descriptions", ["a"])


# ---------------------------------------------------------------------------- captions


def test_captions(tmp_path):
    f = write(tmp_path, "c.json", {"img/1.jpg": ["a dog.", "a brown dog."], "2": "a cat."})
    expected = {"img/1.jpg": ["a dog.", "a brown dog."], "2": ["a cat."]}
    assert load_captions(f) == expected
    assert build_texts(f"captions:path={f}", ["dog", "cat"]) == expected
    assert getattr(TEXT_SOURCES.get("captions"), "per_image", False)


def test_captions_errors(tmp_path):
    with pytest.raises(TextSourceError, match="image 'x'"):
        load_captions(write(tmp_path, "a.json", {"x": []}))
    with pytest.raises(TextSourceError, match="image 'x': caption #0"):
        load_captions(write(tmp_path, "b.json", {"x": [None]}))
    with pytest.raises(TextSourceError, match="expected a JSON object"):
        load_captions(write(tmp_path, "c.json", ["a"]))


# ---------------------------------------------------------------------------- built-in aliases


def test_builtin_alias_sets():
    assert "eurosat-wca" in builtin_alias_sets()
    aliases = load_aliases("eurosat-wca")
    assert sorted(aliases.values()) == EUROSAT
    assert aliases["brushland or shrubland"] == "Herbaceous Vegetation Land"
    assert aliases["lake or sea"] == "Sea or Lake"


# ---------------------------------------------------------------------------- real shared files


@needs_shared
def test_eurosat_class_names_match_split():
    split = json.loads((SHARED / "data/eurosat/split_zhou_EuroSAT.json").read_text())
    names = dict(sorted({(label, name) for _, label, name in split["test"]}))
    assert [names[i] for i in range(10)] == EUROSAT


@needs_shared
@pytest.mark.parametrize("name", ["cupl.json", "clip-d.json"])
def test_wca_eurosat_with_builtin_alias(name):
    path = TEXT / "wca/prompts/eurosat" / name
    out = build_texts(f"descriptions:path={path},aliases=eurosat-wca", EUROSAT)
    assert list(out) == EUROSAT and all(out[c] for c in EUROSAT)
    if name == "cupl.json":
        assert out["Forest"][0] == "A forest is a large area of land covered in trees."


@needs_shared
def test_wca_eurosat_without_alias_explains():
    path = TEXT / "wca/prompts/eurosat/cupl.json"
    with pytest.raises(TextSourceError) as exc:
        build_texts(f"descriptions:path={path}", EUROSAT)
    msg = str(exc.value)
    assert "does not cover 10 of 10 classes" in msg
    assert "class 'Sea or Lake' has no descriptions; closest key: 'lake or sea'" in msg
    assert "'brushland or shrubland'" in msg and "eurosat-wca" in msg


@needs_shared
def test_lafter_eurosat_needs_no_alias():
    path = TEXT / "lafter/descriptions/generic/EuroSAT.json"
    out = build_texts(f"descriptions:path={path}", EUROSAT)
    assert all(len(out[c]) == 25 for c in EUROSAT)


@needs_shared
def test_cupl_texture_full_prompts_cover_dtd():
    split = json.loads((TEXT / "coop_splits/split_zhou_DescribableTextures.json").read_text())
    dtd = [n for _, n in sorted({(label, name) for _, label, name in split["test"]})]
    out = build_texts(
        f"descriptions:path={TEXT / 'cupl/all_prompts/full_prompts/texture_prompts_full.json'}",
        dtd,
    )
    assert len(out) == 47 and all(out.values())


@needs_shared
def test_cupl_pets_full_prompts_need_underscore_normalisation():
    split = json.loads((TEXT / "coop_splits/split_zhou_OxfordPets.json").read_text())
    pets = [n for _, n in sorted({(label, name) for _, label, name in split["test"]})]
    path = TEXT / "cupl/all_prompts/full_prompts/pets_prompts_full.json"
    with pytest.raises(TextSourceError, match="closest key"):
        build_texts(f"descriptions:path={path}", pets)
    out = build_texts(f"descriptions:path={path},normalize=underscores", pets)
    assert len(out) == 37 and all(out.values())


@needs_shared
def test_dpa_templates_by_key():
    path = TEXT / "dpa/json_files/templates.json"
    out = build_texts(f"templates:file={path},key=eurosat", ["River"])
    assert out["River"][0] == "a centered satellite photo of River."
    # DPA's ImageNet list is OpenAI's 80 templates, which we ship typed out.
    dpa = json.loads(path.read_text())["imagenet"]
    assert [t.replace("{}", "{c}") for t in dpa] == list(TEMPLATE_SETS["imagenet"])


# ---------------------------------------------------------------------------- encoding


def fake_encoder(dim: int = 8):
    """Deterministic text -> vector (hash-free: depends only on the characters), unnormalised,
    recording each call's batch."""
    calls: list[list[str]] = []

    def encode(texts: list[str]) -> torch.Tensor:
        calls.append(list(texts))
        out = torch.zeros(len(texts), dim)
        for i, t in enumerate(texts):
            for j, ch in enumerate(t):
                out[i, (ord(ch) + j) % dim] += 1.0 + j
        return out

    return encode, calls


def test_encode_class_texts_shapes_and_padding():
    encode, calls = fake_encoder()
    texts = {"a": ["one", "two", "three"], "b": ["four"]}
    ct = encode_class_texts(encode, texts)
    assert isinstance(ct, ClassTexts)
    assert ct.embeds.shape == (2, 3, 8)
    assert ct.mask.tolist() == [[True, True, True], [True, False, False]]
    assert ct.classnames == ["a", "b"] and ct.counts.tolist() == [3, 1]
    assert torch.all(ct.embeds[1, 1:] == 0)
    norms = ct.embeds.norm(dim=-1)
    assert torch.allclose(norms[ct.mask], torch.ones(4))
    assert len(calls) == 1 and calls[0] == ["one", "two", "three", "four"]
    single = torch.nn.functional.normalize(encode(["two"]), dim=-1)[0]
    assert torch.allclose(ct.embeds[0, 1], single)


def test_encode_batches_and_dedupes():
    encode, calls = fake_encoder()
    texts = {"a": ["s1", "s2", "s3"], "b": ["s3", "s4", "s5"]}
    ct = encode_class_texts(encode, texts, batch_size=2)
    assert [len(c) for c in calls] == [2, 2, 1]  # 5 unique sentences
    assert torch.equal(ct.embeds[0, 2], ct.embeds[1, 0])


def test_mean_embeddings():
    encode, _ = fake_encoder()
    texts = {"a": ["one", "two"], "b": ["three"]}
    ct = encode_class_texts(encode, texts)
    means = ct.mean_embeddings()
    e = torch.nn.functional.normalize(encode(["one", "two", "three"]), dim=-1)
    expected_a = torch.nn.functional.normalize(e[0] + e[1], dim=0)
    assert means.shape == (2, 8)
    assert torch.allclose(means[0], expected_a, atol=1e-6)
    assert torch.allclose(means[1], e[2], atol=1e-6)


def test_encode_errors():
    encode, _ = fake_encoder()
    with pytest.raises(TextSourceError, match="class 'b' has no sentences"):
        encode_class_texts(encode, {"a": ["x"], "b": []})
    with pytest.raises(TextSourceError):
        encode_class_texts(encode, {})
    with pytest.raises(ValueError, match="expected \\(T, d\\)"):
        encode_class_texts(lambda ts: torch.zeros(len(ts) + 1, 4), {"a": ["x"]})


def test_build_then_encode_end_to_end():
    encode, _ = fake_encoder()
    texts = build_texts("templates:name=openai-ensemble", ["cat", "dog", "cow"])
    ct = encode_class_texts(encode, texts)
    assert ct.embeds.shape == (3, 7, 8) and bool(ct.mask.all())
