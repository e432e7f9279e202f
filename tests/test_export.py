"""``labelless export``: every method's artifact, every format, read back by its own runtime.

Each artifact is built once on the tiny random model (minimal settings: plumbing, not results),
with one LayerNorm / full fine-tuning so that merged weights matter: a format that dropped the
adapted weights would give different logits than labelless and fail the comparison.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, make_colour_folder
from tests.test_latteclip import _texts_files

pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[1]

ARTIFACTS = {  # name -> (method, params); one per classifier kind and head shape
    "zeroshot-clip": ("zeroshot", {"scorer": "clip"}),
    "zeroshot-cupl": ("zeroshot", {"scorer": "cupl"}),
    "zeroshot-wca": ("zeroshot", {"scorer": "wca", "crops": 2}),
    "fair": ("fair", {"n_crops": 2, "k": 1, "optim": {"epochs": 1, "batch_size": 6, "lr": 1e-2}}),
    "latteclip": ("latteclip", {"optim": {"epochs": 1, "batch_size": 6, "lr": 1e-3}}),
    "flyp-pl": ("flyp-pl", {"optim": {"epochs": 1, "batch_size": 9, "lr": 1e-3}}),
    "coft": ("coft", {"n_ctx": 2, "vpt_tokens": 2, "collab_require": "either",
                      "phase1": {"epochs": 1, "batch_size": 6}, "phase2": {"epochs": 1, "batch_size": 6}}),
    "region-probe": ("region-probe", {"n_regions": 4, "epochs": 2}),
}
NOT_MERGEABLE = {"zeroshot-wca", "region-probe"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import labelless

    root = tmp_path_factory.mktemp("export")
    images = make_colour_folder(root / "colours", per_class=3)
    caps, groups = _texts_files(root, images)
    arts = {}
    for name, (method, params) in ARTIFACTS.items():
        if method == "latteclip":
            params = {**params, "captions": str(caps), "groups": str(groups)}
        res = labelless.adapt(method, TINY, f"imagefolder:root={images}", params=params,
                              out=root / name, device="cpu")
        arts[name] = res.classifier_dir
    return {"root": root, "images": images, "artifacts": arts}


def _reference(world, name):
    import labelless

    clf = labelless.load_classifier(world["artifacts"][name], device="cpu")
    return clf, clf.predict(world["images"])


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("name", list(ARTIFACTS))
def test_graph_formats_match_labelless(world, name, fmt, tmp_path):
    from labelless.export import export_classifier, run_graph

    res = export_classifier(world["artifacts"][name], fmt, tmp_path / fmt, check_images=world["images"])
    meta = json.loads((tmp_path / fmt / "head.json").read_text())
    graph = tmp_path / fmt / ("model.onnx" if fmt == "onnx" else "model.pt")
    assert graph.is_file()
    if name in NOT_MERGEABLE:
        assert not res.mergeable and not meta["mergeable"] and meta["not_mergeable_because"]
        assert res.notes and "cannot be merged" in res.notes[0]
        return
    assert res.mergeable and res.check["against"] == "labelless predictions"
    assert res.check["n_images"] == 9 and res.check["top1_identical"]
    assert res.check["max_abs_logit_diff"] < 1e-3
    # independently of the export's own check: run the graph on the backbone's preprocessing
    clf, ref = _reference(world, name)
    from PIL import Image

    x = torch.stack([clf.backbone.preprocess(Image.open(p).convert("RGB")) for p in ref.ids])
    got = run_graph(fmt, graph, x)
    assert got.shape == ref.logits.shape
    assert float((got - ref.logits).abs().max()) < 1e-3
    assert torch.equal(got.argmax(-1), ref.logits.argmax(-1))


@pytest.mark.parametrize("name", list(ARTIFACTS))
def test_open_clip_format_loads_in_plain_open_clip(world, name, tmp_path):
    import open_clip
    from PIL import Image
    from safetensors.torch import load_file

    from labelless.export import export_classifier

    out = tmp_path / "oc"
    res = export_classifier(world["artifacts"][name], "open_clip", out)
    assert (out / "open_clip_config.json").is_file() and (out / "open_clip_model.safetensors").is_file()
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    model.eval()
    clf, ref = _reference(world, name)
    # the adapted weights are merged: every tensor equals the adapted backbone's
    own = clf.backbone.model.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(v, own[k]), k
    head = json.loads((out / "head.json").read_text())
    tensors = load_file(str(out / "head.safetensors"))
    assert head["classnames"] == clf.classnames
    if name in NOT_MERGEABLE:
        assert not res.mergeable and set(tensors) == set(clf.classifier.tensors())
        return
    x = torch.stack([preprocess(Image.open(p).convert("RGB")) for p in ref.ids])
    if head["feature"] == "cls":
        model.visual.proj = None
    with torch.no_grad():
        f = model.encode_image(x, normalize=head["normalize"])
    logits = head["logit_scale"] * f @ tensors["weight"].T + tensors.get("bias", 0)
    assert float((logits - ref.logits).abs().max()) < 1e-3
    assert torch.equal(logits.argmax(-1), ref.logits.argmax(-1))


def test_readme_open_clip_snippet_runs(world, tmp_path):
    """The README's plain-open_clip snippet, run as written on an exported FAIR artifact."""
    from labelless.export import export_classifier

    out = tmp_path / "exported"
    export_classifier(world["artifacts"]["fair"], "open_clip", out)
    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- export-snippet -->\s*```python\n(.*?)```", readme, re.S)
    assert block, "README has no export snippet"
    code = block.group(1)
    image = next(Path(world["images"]).rglob("*.png"))
    code = code.replace('"exported"', repr(str(out))).replace('"photo.jpg"', repr(str(image)))
    assert len(code.strip().splitlines()) <= 16
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    _, ref = _reference(world, "fair")
    assert ns["label"] == ref.labels[ref.ids.index(str(image))]


def test_hf_format_round_trip(tmp_path):
    transformers = pytest.importorskip("transformers")
    import labelless
    from labelless.export import export_classifier
    from tests.hf_tiny import make_tiny_hf_clip

    make_tiny_hf_clip(tmp_path / "hf")
    images = make_colour_folder(tmp_path / "colours", per_class=2)
    res = labelless.adapt("fair", f"hf:{tmp_path / 'hf'}", f"imagefolder:root={images}", out=tmp_path / "run",
                          params={"n_crops": 2, "k": 1, "optim": {"epochs": 1, "batch_size": 6, "lr": 1e-2}},
                          device="cpu")
    out = tmp_path / "exported"
    export_classifier(res.classifier_dir, "hf", out)
    model = transformers.AutoModel.from_pretrained(out).eval()
    processor = transformers.AutoImageProcessor.from_pretrained(out)
    head = json.loads((out / "head.json").read_text())
    from PIL import Image
    from safetensors.torch import load_file

    w = load_file(str(out / "head.safetensors"))["weight"]
    ref = labelless.predict(res.classifier, images)
    pix = processor(images=[Image.open(p).convert("RGB") for p in ref.ids], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        f = model.get_image_features(pixel_values=pix)
    f = getattr(f, "pooler_output", f)  # transformers 5 may return an output object
    logits = head["logit_scale"] * torch.nn.functional.normalize(f, dim=-1) @ w.T
    assert torch.equal(logits.argmax(-1), ref.logits.argmax(-1))
    assert float((logits - ref.logits).abs().max()) < 1e-2
    with pytest.raises(Exception, match="needs an openclip: backbone"):
        export_classifier(res.classifier_dir, "open_clip", tmp_path / "x")


def test_export_cli_and_errors(world, tmp_path, capsys):
    from labelless.cli import main

    rc = main(["export", str(world["artifacts"]["coft"]), "--format", "onnx", "--out", str(tmp_path / "o"),
               "--check-images", str(world["images"])])
    out = capsys.readouterr().out
    assert rc == 0 and "top-1 identical: True" in out and "max |logit diff|" in out
    rc = main(["export", str(world["artifacts"]["coft"]), "--format", "hf", "--out", str(tmp_path / "h")])
    assert rc == 2 and "needs an hf: backbone" in capsys.readouterr().err
    rc = main(["export", str(tmp_path), "--format", "onnx", "--out", str(tmp_path / "n")])
    assert rc == 2 and "not a labelless classifier artifact" in capsys.readouterr().err
