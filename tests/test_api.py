"""The Python API (labelless.api): its doctest, every image input kind, and a light import."""

from __future__ import annotations

import doctest
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.conftest import TINY, make_colour_folder

REPO = Path(__file__).resolve().parents[1]


def _run(code: str) -> str:
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True).stdout.strip()


def test_import_and_cli_parser_do_not_import_torch():
    # `import labelless` and building the CLI (what --help and argument errors need) stay light
    out = _run("import sys, labelless; from labelless.cli import build_parser; build_parser(); "
               "print('torch' in sys.modules, 'open_clip' in sys.modules)")
    assert out == "False False"


def test_lazy_attributes_and_all():
    import labelless

    assert set(labelless.__all__) >= {"adapt", "zeroshot", "predict", "evaluate", "load_classifier",
                                      "export", "RunResult", "Predictions", "LoadedClassifier"}
    for name in labelless.__all__:
        assert getattr(labelless, name) is not None
    with pytest.raises(AttributeError):
        labelless.no_such_thing  # noqa: B018
    assert (Path(labelless.__file__).parent / "py.typed").is_file()


def test_api_doctest(tmp_path):
    import labelless.api

    image_dir = make_colour_folder(tmp_path / "colours")
    res = doctest.testmod(labelless.api, extraglobs={"image_dir": str(image_dir), "tmp": str(tmp_path)},
                          optionflags=doctest.ELLIPSIS, verbose=False)
    assert res.attempted >= 10
    assert res.failed == 0


def test_predict_accepts_paths_pil_and_tensors(tmp_path):
    import labelless

    image_dir = make_colour_folder(tmp_path / "colours", per_class=2)
    clf = labelless.zeroshot(TINY, classes=["red", "green", "blue"], device="cpu").classifier
    assert clf.path is None
    by_folder = labelless.predict(clf, image_dir)
    paths = by_folder.ids
    by_list = labelless.predict(clf, paths)
    one = labelless.predict(clf, paths[0])
    images = [Image.open(p).convert("RGB") for p in paths]
    by_pil = labelless.predict(clf, images)
    tensor = torch.stack([torch.from_numpy(__import__("numpy").array(im)).permute(2, 0, 1) / 255.0
                          for im in images])
    by_tensor = clf.predict(tensor)
    for other in (by_list, by_pil, by_tensor):
        assert torch.allclose(other.logits, by_folder.logits, atol=1e-4)
    assert torch.allclose(one.logits[0], by_folder.logits[0], atol=1e-4)
    assert by_pil.ids[0] == "<image 0>"
    top = by_folder.topk(2)
    assert len(top) == len(paths) and top[0][0][0] == by_folder.labels[0]
    assert abs(sum(by_folder.probs[0].tolist()) - 1) < 1e-5


def test_predict_rejects_bad_inputs(tmp_path):
    import labelless
    from labelless.errors import ConfigError

    clf = labelless.zeroshot(TINY, classes="red,green", device="cpu").classifier
    with pytest.raises(ConfigError, match="values in \\[0, 1\\]"):
        clf.predict(torch.full((1, 3, 8, 8), 255.0))
    with pytest.raises(ConfigError, match="\\(N, 3, H, W\\)"):
        clf.predict(torch.zeros(2, 8, 8))
    with pytest.raises(ConfigError, match="neither an image folder nor an image file"):
        clf.predict(tmp_path / "nothing-here")
    with pytest.raises(ConfigError, match="zeroshot needs data="):
        labelless.zeroshot(TINY)


def test_adapt_with_recipe_and_overrides(tmp_path):
    """A YAML recipe gives the defaults; arguments and params override it key by key."""
    import labelless

    image_dir = make_colour_folder(tmp_path / "colours", per_class=2)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {TINY}\ndata: imagefolder:root={image_dir}\n"
                      "params:\n  scorer: cupl\n  crops: 4\n")
    res = labelless.adapt("zeroshot", TINY, f"imagefolder:root={image_dir}", config=recipe,
                          params={"crops": 3}, out=tmp_path / "run", device="cpu")
    cfg = res.classifier.classifier.config
    assert (cfg["scorer"], cfg["crops"]) == ("cupl", 3)
    ev = labelless.evaluate(res.classifier, f"imagefolder:root={image_dir}", out=tmp_path / "ev")
    assert ev.results_path.is_file() and ev.metrics.n == 6
    assert abs(ev.metrics.top1 - res.metrics.top1) < 1e-6
