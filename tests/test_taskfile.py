"""Testbed task files and task suites: reading, validation, use through the spec strings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from labelless.cli import main
from labelless.errors import ConfigError
from labelless.testbed.suite import MODES, draw_classes, task_for
from labelless.testbed.task import TaskConfig, task_hash
from labelless.testbed.taskfile import (
    load_task_file,
    one_attribute_neighbours,
    task_from_dict,
    write_task_file,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED_FILE = REPO / "experiments" / "testbed" / "dev" / "dev-0-shipped.yaml"

SMALL = {
    "seed": 5,
    "classes": [
        {"name": "amberfin", "shape": "ring", "colour": "cyan", "texture": "solid"},
        {"name": "briarfang", "shape": "ring", "colour": "orange", "texture": "solid"},
        {"name": "coralwisp", "shape": "cross", "colour": "white", "texture": "dotted"},
        {"name": "driftclaw", "shape": "cross", "colour": "white", "texture": "striped"},
    ],
    "splits": {"train": 8, "val": 4, "test": 4},
}


def _write(tmp_path: Path, d: dict, name: str = "task.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p


def test_shipped_task_file_is_the_default_task():
    cfg = load_task_file(SHIPPED_FILE)
    assert cfg == TaskConfig()
    assert task_hash(cfg) == task_hash(TaskConfig())  # same cache folder: no rebuild


def test_task_file_round_trip(tmp_path):
    cfg = task_from_dict(SMALL)
    assert cfg.classnames == ["amberfin", "briarfang", "coralwisp", "driftclaw"]
    assert (cfg.n_train, cfg.n_val, cfg.n_test) == (8, 4, 4)
    assert cfg.world.seed == 5 and cfg.world.image_size == 64
    again = load_task_file(write_task_file(cfg, tmp_path / "out.yaml", name="x", notes={"a": 1}))
    assert again == cfg


@pytest.mark.parametrize("change, words", [
    (lambda d: d["classes"][0].update(colour="pink"), ["classes[0].colour", "pink", "purple"]),
    (lambda d: d["classes"][1].update(name="amberfin"), ["repeated", "amberfin"]),
    (lambda d: d["classes"][1].update(colour="cyan"), ["same attributes", "amberfin", "briarfang"]),
    (lambda d: d["classes"][3].update(shape="star", colour="red"), ["no neighbour", "coralwisp"]),
    (lambda d: d.update(object_size=[0.5, 1.4]), ["object_size", "out of range"]),
    (lambda d: d.update(distractors=[2, 9]), ["distractors", "out of range"]),
    (lambda d: d.update(splits={"train": 0}), ["splits.train"]),
    (lambda d: d.update(sead=3), ["unknown key 'sead'", "Did you mean 'seed'"]),
    (lambda d: d.pop("seed"), ["'seed' is required"]),
    (lambda d: d.update(backgrounds=["sky"]), ["background 'sky'", "cloudy"]),
    (lambda d: d["classes"][0].update(colur="red"), ["unknown key 'colur'", "colour"]),
])
def test_bad_task_file_names_field_and_fix(tmp_path, change, words):
    d = json.loads(json.dumps(SMALL))
    change(d)
    path = _write(tmp_path, d)
    with pytest.raises(ConfigError) as e:
        load_task_file(path)
    msg = str(e.value)
    assert str(path) in msg
    for w in words:
        assert w in msg, (w, msg)


def test_cli_check_bad_file_exits_2(tmp_path, capsys):
    d = json.loads(json.dumps(SMALL))
    d["classes"][0]["texture"] = "wavy"
    assert main(["testbed", "check", str(_write(tmp_path, d)), "--no-zero-shot"]) == 2
    err = capsys.readouterr().err
    assert "texture 'wavy'" in err and "Traceback" not in err
    assert main(["testbed", "check", str(_write(tmp_path, SMALL, "ok.yaml")), "--no-zero-shot"]) == 0
    assert "briarfang" in capsys.readouterr().out


@pytest.mark.parametrize("mode", MODES)
def test_drawn_classes_are_pairs_on_the_deciding_attribute(mode):
    import numpy as np

    for seed in range(5):
        classes = draw_classes(np.random.default_rng(seed), mode)
        assert len(classes) == 10
        assert len({c[0] for c in classes}) == 10 and len({c[1:] for c in classes}) == 10
        nb = one_attribute_neighbours(classes)
        assert all(nb.values())  # every class has a one-attribute neighbour
        if mode != "mixed":
            a = {"shape": 1, "colour": 2, "texture": 3}[mode]
            for k in range(0, 10, 2):  # pair k, k+1 differs in the deciding attribute only
                diff = [i for i in (1, 2, 3) if classes[k][i] != classes[k + 1][i]]
                assert diff == [a]
        # valid as a task file (write + read back)
        task_from_dict({"seed": 1, "classes": [dict(zip(("name", "shape", "colour", "texture"), c))
                                               for c in classes]})


def test_task_difficulty_moves_object_size_and_clutter():
    import numpy as np

    classes = draw_classes(np.random.default_rng(0), "mixed")
    easy, hard = task_for(classes, 3, 0.0, ("cloudy",)), task_for(classes, 3, 1.0, ("cloudy",))
    assert easy.world.size_range[0] > hard.world.size_range[0]
    assert easy.world.n_distractors[1] < hard.world.n_distractors[1]


def test_task_file_through_data_and_text_specs(tmp_path, monkeypatch):
    """--data testbed:task=F and --texts testbed:task=F serve the file's task (built into the
    cache); captions=testbed resolves to the same task as the data."""
    from labelless.data import build_dataset
    from labelless.data.testbed import task_of_spec
    from labelless.testbed.groups import resolve_testbed_files
    from labelless.text import build_texts

    monkeypatch.setenv("LABELLESS_CACHE", str(tmp_path / "cache"))
    path = _write(tmp_path, SMALL)
    spec = f"testbed:task={path},split=train"
    ds = build_dataset(spec)
    assert list(ds.classnames) == [c["name"] for c in SMALL["classes"]]
    assert len(ds) == 8 and ds.meta["task_file"] == str(path)
    assert sorted(set(ds.labels.tolist())) == [0, 1, 2, 3]
    assert len(build_dataset(f"testbed:task={path},split=test")) == 4
    texts = build_texts(f"testbed:task={path},what=descriptions", list(ds.classnames))
    assert "cyan" in " ".join(texts["amberfin"]) and "orange" in " ".join(texts["briarfang"])
    assert task_of_spec(spec) == str(path) and task_of_spec("testbed:split=train") == ""
    assert task_of_spec("eurosat:root=x") is None
    params = resolve_testbed_files({"captions": "testbed", "alpha": 1}, tmp_path, task=str(path))
    captions = json.loads(Path(params["captions"]).read_text())
    assert len(captions) == 16 and params["alpha"] == 1
    assert Path(params["captions"]).parent == Path(ds.paths[0]).parents[3]  # the same task folder


HAND_WRITTEN = """\
# written by hand: 4 classes, two pairs
seed: 77
classes:
  - {name: amberfin, shape: ring, colour: cyan, texture: solid}
  - {name: briarfang, shape: ring, colour: orange, texture: solid}
  - {name: coralwisp, shape: cross, colour: white, texture: dotted}
  - {name: driftclaw, shape: cross, colour: white, texture: striped}
object_size: [0.45, 0.6]
distractors: [0, 1]
backgrounds: [cloudy]
splits: {train: 24, val: 8, test: 12}
"""


@pytest.mark.slow
def test_hand_written_task_file_works_everywhere(tmp_path, capsys):
    """zeroshot, adapt (LaTTe-CLIP with the task's SIMULATED captions and groups), demo and bench
    on a task file written by hand, with the pre-trained testbed model."""
    task = tmp_path / "mine.yaml"
    task.write_text(HAND_WRITTEN)
    f = str(task)
    texts = f"testbed:task={f},what=descriptions"
    assert main(["zeroshot", "--model", "testbed", "--data", f"testbed:task={f},split=test",
                 "--texts", texts, "--scorer", "cupl", "--out", str(tmp_path / "zs"), "--no-progress"]) == 0
    zs = json.loads((tmp_path / "zs" / "results.json").read_text())
    assert zs["metrics"]["n"] == 12 and len(zs["metrics"]["per_class"]) == 4

    out = tmp_path / "latte"
    assert main(["adapt", "--method", "latteclip", "--model", "testbed",
                 "--data", f"testbed:task={f},split=train", "--eval-data", f"testbed:task={f},split=test",
                 "--texts", texts, "--label-texts", texts, "--set", "captions=testbed",
                 "--set", "groups=testbed", "--set", "optim.epochs=1", "--set", "optim.batch_size=8",
                 "--out", str(out), "--no-progress"]) == 0
    method = json.loads((out / "results.json").read_text())["config"]["method"]
    captions = json.loads(Path(method["captions"]).read_text())
    assert len(captions) == 24 + 8 + 12  # this task's captions, not the shipped task's 3,000
    groups = json.loads(Path(method["groups"]).read_text())["groups"]
    assert {m.split("/")[1] for g in groups for m in g["images"]} <= {"amberfin", "briarfang",
                                                                       "coralwisp", "driftclaw"}

    from labelless.demo import demo
    from labelless.methods.base import Runtime

    rows = demo(tmp_path / "demo", Runtime(device="cpu", progress=False), only=["descriptions"], task=f)
    assert [r["name"] for r in rows] == ["zero-shot (descriptions, CuPL)"]
    run_dirs = list((tmp_path / "demo").glob("mine-*/zero-shot*/results.json"))
    assert len(run_dirs) == 1  # runs of a task file go under <out>/<stem>-<task hash>/
    assert json.loads(run_dirs[0].read_text())["metrics"]["top1"] == zs["metrics"]["top1"]

    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump({
        "name": "mine", "baseline": "zs", "defaults": {"model": "testbed"},
        "grid": {"runs": [{"name": "zs", "method": "zeroshot", "params": {"scorer": "cupl"}},
                          {"name": "names", "method": "zeroshot", "params": {"scorer": "clip"}}],
                 "data": [{"name": "mine", "data": f"testbed:task={f},split=train",
                           "eval_data": f"testbed:task={f},split=test", "texts": texts}]}}))
    capsys.readouterr()
    assert main(["bench", str(exp), "--runs-dir", str(tmp_path / "runs"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Gain over `zs`" in printed and (tmp_path / "runs" / "mine" / "suite.md").is_file()


def test_simulated_coder_texts_follow_the_task_file(tmp_path, monkeypatch):
    """--texts testbed:task=F,what=coder: the five CODER types SIMULATED from the file's classes;
    the one-vs-one sentences name exactly the attributes that differ."""
    from labelless.errors import TextSourceError
    from labelless.text import build_texts

    monkeypatch.setenv("LABELLESS_CACHE", str(tmp_path / "cache"))
    path = _write(tmp_path, SMALL)
    names = [c["name"] for c in SMALL["classes"]]
    texts = build_texts(f"testbed:task={path},what=coder", names)
    assert list(texts) == names
    a = texts["amberfin"]
    assert a[0] == "a photo of amberfin"
    assert "amberfin which has a cyan colour" in a and "amberfin which has a ring outline" in a
    ovo = [s for s in a if "is different from" in s]
    # briarfang differs in colour only; coralwisp in all three attributes
    assert [s for s in ovo if s.endswith("briarfang.")] == [
        "Because of a cyan colour, amberfin is different from briarfang."]
    assert len([s for s in ovo if s.endswith("coralwisp.")]) == 3
    d = texts["driftclaw"]
    assert [s for s in d if s.endswith("coralwisp.")] == ["Because of stripes, driftclaw is different from coralwisp."]
    assert not any("orange" in s for s in a)  # no other class's attributes leak into amberfin's texts
    with pytest.raises(TextSourceError, match="no class"):
        build_texts(f"testbed:task={path},what=coder", names[:3] + ["nosuch"])
    with pytest.raises(TextSourceError, match="coder"):
        build_texts(f"testbed:task={path},what=nope", names)
