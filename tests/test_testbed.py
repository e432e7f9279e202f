"""Tests of the testbed: deterministic world, simulated captions, task files, cache, checkpoint.

Tiny configs only (a few images, a few optimiser steps); the full-size testbed is exercised by
the learning tests of the methods.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from labelless.errors import ConfigError
from labelless.testbed import (
    PretrainConfig,
    Scene,
    TaskConfig,
    TestbedConfig,
    WorldConfig,
    build_task,
    config_hash,
    ensure_testbed,
    group_captions,
    render,
    sample_pairs,
    sample_scene,
    simulate_caption,
)
from labelless.testbed import pretrain as pretrain_module
from labelless.testbed.pretrain import MODEL_NAME, pretrain, pretrain_hash, save_checkpoint
from labelless.testbed.task import class_descriptions, task_hash, task_scene
from labelless.testbed.world import scene_rng


def tiny_pretrain(**kw) -> PretrainConfig:
    return PretrainConfig(n_pairs=48, steps=2, batch_size=16, n_eval=16, warmup_steps=1, **kw)


def tiny_task(**kw) -> TaskConfig:
    return TaskConfig(n_train=20, n_val=10, n_test=10, **kw)


# ----------------------------------------------------------------------------- world


def test_pairs_are_deterministic_per_seed():
    cfg = WorldConfig()
    a_img, a_cap = sample_pairs(cfg, 12)
    b_img, b_cap = sample_pairs(cfg, 12)
    assert np.array_equal(a_img, b_img) and a_cap == b_cap
    c_img, c_cap = sample_pairs(dataclasses.replace(cfg, seed=1), 12)
    assert not np.array_equal(a_img, c_img) and a_cap != c_cap
    # Pair i depends on its index only, not on how many pairs were generated before it.
    d_img, d_cap = sample_pairs(cfg, 4, start=8)
    assert np.array_equal(d_img, a_img[8:]) and d_cap == a_cap[8:]
    assert a_img.shape == (12, cfg.image_size, cfg.image_size, 3) and a_img.dtype == np.uint8


def test_scene_roundtrip_renders_identically():
    cfg = WorldConfig(image_size=48, backgrounds=("speckled", "cloudy"))
    scene = sample_scene(cfg, scene_rng(3, 0, 0))
    again = Scene.from_dict(json.loads(json.dumps(scene.to_dict())))
    assert again == scene
    assert np.array_equal(render(scene, cfg), render(again, cfg))


def test_every_shape_texture_and_background_renders():
    for bg in ("plain", "gradient", "noise", "speckled", "cloudy"):
        cfg = WorldConfig(backgrounds=(bg,))
        for i in range(20):
            img = render(sample_scene(cfg, scene_rng(0, 5, i)), cfg)
            assert img.std() > 0


def test_bad_world_config_is_rejected():
    with pytest.raises(ConfigError, match="shapes"):
        WorldConfig(shapes=("blob",))
    with pytest.raises(ConfigError, match="size_range"):
        WorldConfig(size_range=(0.5, 0.2))


@pytest.mark.parametrize("rate", [0.0, 0.3])
def test_simulated_caption_error_rate(rate):
    cfg = WorldConfig()
    wrong = total = 0
    for i in range(1500):
        rng = scene_rng(7, 0, i)
        scene = sample_scene(cfg, rng)
        cap = simulate_caption(scene, rate, rng, cfg)
        for true, said in zip(scene.objects, cap.described.objects):
            for a, b in zip(true.attributes, said.attributes):
                wrong += a != b
                total += 1
        main = cap.described.main
        assert f"{main.colour} {main.texture} {main.shape}" in cap.text
    assert abs(wrong / total - rate) < 0.02


def test_simulated_captions_are_deterministic():
    scene = sample_scene(WorldConfig(), scene_rng(0, 0, 1))
    a = simulate_caption(scene, 0.5, np.random.default_rng(1)).text
    b = simulate_caption(scene, 0.5, np.random.default_rng(1)).text
    assert a == b


# ----------------------------------------------------------------------------- task


def test_task_scenes_follow_their_class():
    cfg = tiny_task()
    forbidden = {c[1:] for c in cfg.classes}
    for i in range(30):
        scene, label = task_scene(cfg, "test", i)
        assert scene.main.attributes == cfg.classes[label][1:]
        assert all(o.attributes not in forbidden for o in scene.objects[1:])


def test_descriptions_state_the_attributes():
    cfg = tiny_task()
    desc = class_descriptions(cfg)
    assert list(desc) == cfg.classnames
    for name, shape, colour, _ in cfg.classes:
        assert len(desc[name]) == cfg.n_descriptions
        assert all(colour in s and shape in s for s in desc[name])


def test_build_task_files(tmp_path):
    cfg = tiny_task()
    paths = build_task(cfg, tmp_path)
    split = json.loads(paths.split_json.read_text())
    assert {k: len(v) for k, v in split.items()} == {"train": 20, "val": 10, "test": 10}
    assert paths.classnames == cfg.classnames
    for rel, label, name in split["train"] + split["val"] + split["test"]:
        assert (paths.images_dir / rel).is_file() and cfg.classnames[label] == name
        assert rel.split("/")[1] == name
    captions = json.loads(paths.captions_json.read_text())
    assert set(captions) == {r[0] for v in split.values() for r in v}
    assert json.loads((paths.root / "captions.meta.json").read_text())["simulated"] is True
    assert json.loads(paths.templates_json.read_text()) == ["a photo of a {c}."]
    assert set(json.loads(paths.descriptions_json.read_text())) == set(cfg.classnames)
    assert paths.config == cfg
    # Rebuilding the same config is a no-op; a changed config gets its own folder.
    mtime = paths.split_json.stat().st_mtime_ns
    assert build_task(cfg, tmp_path).root == paths.root
    assert paths.split_json.stat().st_mtime_ns == mtime
    other = build_task(dataclasses.replace(cfg, n_test=11), tmp_path)
    assert other.root != paths.root and len(other.split("test")) == 11
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_group_captions(tmp_path):
    paths = build_task(tiny_task(), tmp_path)
    recs = paths.split("train")
    group = [r[0] for r in recs if r[1] == 0]
    (cap,) = group_captions(paths, [group], error_rate=0.0)
    shape, colour, texture = paths.config.classes[0][1:]
    assert cap == f"a group of images that each show a {colour} {texture} {shape}"
    assert group_captions(paths, [group], error_rate=0.5, seed=1) == group_captions(
        paths, [group], error_rate=0.5, seed=1
    )
    with pytest.raises(ConfigError):
        group_captions(paths, [["nope.png"]])


def test_hashes_cover_every_field():
    assert task_hash(tiny_task()) == task_hash(tiny_task())
    assert task_hash(tiny_task()) != task_hash(tiny_task(caption_error_rate=0.3))
    base = tiny_pretrain()
    assert pretrain_hash(base) == pretrain_hash(tiny_pretrain())
    assert pretrain_hash(base) != pretrain_hash(dataclasses.replace(base, lr=1e-4))
    world = dataclasses.replace(base.world, pixel_noise=1.0)
    assert pretrain_hash(base) != pretrain_hash(dataclasses.replace(base, world=world))
    assert config_hash(base, version="a") != config_hash(base, version="b")


# ----------------------------------------------------------------------------- pre-training


def test_pretrain_is_deterministic():
    a, log_a = pretrain(tiny_pretrain(), progress=False)
    b, log_b = pretrain(tiny_pretrain(), progress=False)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert log_a["losses_every10"] == log_b["losses_every10"]
    c, _ = pretrain(tiny_pretrain(seed=1), progress=False)
    assert not torch.equal(sa["visual.conv1.weight"], c.state_dict()["visual.conv1.weight"])


def test_checkpoint_loads_through_open_clip(tmp_path):
    import open_clip

    model, _ = pretrain(tiny_pretrain(), progress=False)
    path = tmp_path / "model.pt"
    save_checkpoint(model, path)
    loaded, _, preprocess = open_clip.create_model_and_transforms(MODEL_NAME, pretrained=str(path))
    loaded.eval()
    images = torch.randn(3, 3, 32, 32)
    tokens = open_clip.get_tokenizer(MODEL_NAME)(["a red circle", "a blue striped square"])
    with torch.no_grad():
        assert torch.equal(model.encode_image(images), loaded.encode_image(images))
        assert torch.equal(model.encode_text(tokens), loaded.encode_text(tokens))


def test_ensure_testbed_caches(tmp_path, monkeypatch):
    config = TestbedConfig(pretrain=tiny_pretrain(), task=tiny_task())
    calls = []
    real = pretrain_module.pretrain

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(pretrain_module, "pretrain", counting)
    tb = ensure_testbed(tmp_path, progress=False, config=config)
    assert tb.checkpoint.is_file() and tb.checkpoint.parent.parent == tmp_path / "testbed"
    assert tb.spec == f"openclip:{MODEL_NAME}:{tb.checkpoint}"
    meta = json.loads((tb.checkpoint.parent / "model.json").read_text())
    assert meta["hash"] == tb.model_hash == tb.checkpoint.parent.name
    mtime = tb.checkpoint.stat().st_mtime_ns
    again = ensure_testbed(tmp_path, progress=False, config=config)
    assert len(calls) == 1
    assert again.checkpoint == tb.checkpoint and tb.checkpoint.stat().st_mtime_ns == mtime
    assert again.task.root == tb.task.root
    changed = TestbedConfig(pretrain=tiny_pretrain(seed=5), task=tiny_task())
    other = ensure_testbed(tmp_path, progress=False, config=changed)
    assert len(calls) == 2 and other.checkpoint != tb.checkpoint
    assert other.task.root == tb.task.root


def test_publish_dir_builds_once_under_concurrency_and_clears_stale_temporaries(tmp_path):
    import threading
    import time

    from labelless.testbed.cache import publish_dir

    final = tmp_path / "artefact"
    stale = tmp_path / ".artefact.tmp-killed"  # what a killed builder leaves behind
    stale.mkdir()
    calls = []

    def build(tmp):
        calls.append(tmp)
        time.sleep(0.3)  # long enough for the other thread to arrive while we build
        (tmp / "model.pt").write_text("weights")

    results = []
    threads = [threading.Thread(target=lambda: results.append(publish_dir(final, build))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and sorted(results) == [False, True]
    assert (final / "model.pt").read_text() == "weights"
    assert not stale.exists() and not list(tmp_path.glob(".artefact.tmp-*"))
