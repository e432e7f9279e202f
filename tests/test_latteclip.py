"""LaTTe-CLIP mechanics: the pure functions against hand-computed values, one training step
against an independent re-computation of the prototype update, which parameters train, the
artifact round trip, the FLYP + pseudo-label baseline and the config errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from labelless.engine import OptimConfig
from labelless.errors import ConfigError
from labelless.methods import latteclip as L
from labelless.methods.base import FitContext, Runtime, load_classifier
from labelless.scoring.latte import (
    clip_contrastive_loss,
    mix_texts,
    mixer_weights,
    momentum_update,
    prototype_text,
    prototype_update,
)

# ------------------------------------------------------------------------------ pure functions


def test_mixer_weights_hand_computed():
    P = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    t = torch.tensor([[[0.8, 0.6, 0.0], [0.6, 0.0, 0.8], [1.0, 0.0, 0.0]]])  # (1, 3, 3)
    w = mixer_weights(t, 2 * P)  # prototypes are normalised inside
    assert torch.allclose(w, torch.tensor([[0.8 - 0.6, 0.8 - 0.6, 1.0]]) + 1e-6)
    w = mixer_weights(t, P, mask=torch.tensor([[True, False, True]]))
    assert w[0, 1] == 0 and not w.requires_grad


def test_mix_and_prototype_text():
    t = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    w = torch.tensor([[3.0, 1.0]])
    tb = mix_texts(t, w)
    assert torch.allclose(tb, torch.tensor([[0.75, 0.25]]))  # not re-normalised
    P = torch.tensor([[0.0, 1.0]])
    assert torch.allclose(prototype_text(P, tb, 0.01), 0.99 * P + 0.01 * tb)


def test_prototype_updates_match_formulas():
    g = torch.Generator().manual_seed(0)
    bank = F.normalize(torch.randn(4, 5, generator=g), dim=-1)
    t = torch.randn(6, 5, generator=g)
    y = torch.tensor([0, 0, 2, 2, 2, 3])
    new = prototype_update(bank, t, y)
    assert torch.allclose(new[0], F.normalize(t[:2].mean(0), dim=0))
    assert torch.allclose(new[2], F.normalize(t[2:5].mean(0), dim=0))
    assert torch.allclose(new[3], F.normalize(t[5], dim=0))
    assert torch.equal(new[1], bank[1])  # absent class untouched
    m = momentum_update(bank, t, y, 0.9)
    assert torch.allclose(m[2], F.normalize(0.9 * bank[2] + 0.1 * t[2:5].mean(0), dim=0))
    assert torch.allclose(momentum_update(bank, t, y, 0.0)[0], F.normalize(t[:2].mean(0), dim=0))
    # the official update on mixed texts t = 0.99 P + 0.01 t_bar is the paper's EMA with mu = 0.99
    mixed = prototype_text(bank[y], t, 0.01)
    assert torch.allclose(prototype_update(bank, mixed, y), momentum_update(bank, t, y, 0.99), atol=1e-6)


def test_clip_loss_hand_computed():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    s = 2.0
    # row 0: logits [2, 2] -> CE = log 2; row 1: [0, 0] -> log 2; columns: [2, 0] target 0, [2, 0] target 1
    col = 0.5 * ((math.log(1 + math.exp(-2))) + (math.log(1 + math.exp(2))))
    expected = 0.5 * (math.log(2) + col)
    assert abs(clip_contrastive_loss(img, txt, s).item() - expected) < 1e-6


# ------------------------------------------------------------------------------ training mechanics


def _texts_files(root: Path, folder: Path) -> tuple[Path, Path]:
    caps = {}
    for p in sorted(folder.rglob("*.png")):
        caps[f"{p.parent.name}/{p.name}"] = [f"a {p.parent.name} square, image {p.stem[-1]}"]
    groups = {"groups": [{"class": c, "caption": f"several {c} squares"} for c in ("red", "green", "blue")]
              + [{"class": "red", "caption": "reddish things"}]}
    (root / "caps.json").write_text(json.dumps(caps))
    (root / "groups.json").write_text(json.dumps(groups))
    return root / "caps.json", root / "groups.json"


def _ctx(backbone, folder, out, **kw):
    from labelless.data import build_dataset

    ds = build_dataset(f"imagefolder:root={folder}")
    cls = ds.classnames
    return FitContext(
        backbone=backbone, train=ds, classnames=cls,
        texts={c: [f"a photo of a {c}.", f"a {c} thing."] for c in cls},
        label_texts={c: [f"a photo of a {c}."] for c in cls},
        rt=Runtime(device="cpu", batch_size=32, progress=False, cache_dir=None), out_dir=out, **kw,
    )


def test_training_step_prototype_update_equals_formula(tiny_backbone, colour_folder, tmp_path):
    caps, groups = _texts_files(tmp_path, colour_folder)
    cfg = L.LatteCLIPConfig(captions=str(caps), groups=str(groups), optim=OptimConfig(batch_size=6, epochs=1))
    ctx = _ctx(tiny_backbone, colour_folder, tmp_path / "run")
    tr = L.LatteCLIP(cfg).build_trainer(ctx)
    assert all(c is not None for c in tr.captions)
    # make the mixer snapshot differ from the current bank, as later in an epoch
    ds = tr.dataset_for_epoch(0)
    tr.bank = F.normalize(tr.bank + 0.3 * torch.randn_like(tr.bank), dim=-1)
    batch = torch.utils.data.default_collate([ds[i] for i in (0, 4, 7, 12, 13, 17)])
    bank0, mix0 = tr.bank.clone(), tr.mixer_bank.clone()

    # independent re-computation (no grad) of what the step must do
    with torch.no_grad():
        img = tiny_backbone.encode_image(batch["views"]["train"][:, 0]).embeds
        y_ft = (img @ bank0.T).argmax(-1)
        y_zs = tr.zs_labels[batch["index"]]
        ts, ys = [], []
        for y in (y_ft, y_zs):
            for b, i in enumerate(batch["index"].tolist()):
                strings = [tr.class_prompts[int(y[b])], tr.captions[i], tr.group_text(i, int(y_zs[b]))]
                e = tiny_backbone.encode_text(strings)  # (3, d)
                top = (e @ mix0.T).topk(2, dim=-1).values
                w = top[:, 0] - top[:, 1] + 1e-6
                tbar = (w[:, None] * e).sum(0) / w.sum()
                ts.append(0.99 * bank0[int(y[b])] + 0.01 * tbar)
                ys.append(int(y[b]))
        expected = bank0.clone()
        for c in set(ys):
            expected[c] = F.normalize(torch.stack([t for t, k in zip(ts, ys) if k == c]).mean(0), dim=0)

    out = tr.training_step(batch, 0)
    assert torch.allclose(tr.bank, expected, atol=1e-5)
    assert torch.equal(tr.mixer_bank, mix0)  # the snapshot only moves at epoch starts
    assert out["loss"].requires_grad and {"loss_ft", "loss_zs"} <= set(out)
    out["loss"].backward()
    grads = {n for n, p in tiny_backbone.model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("visual.") for n in grads)  # image tower
    assert "token_embedding.weight" in grads or any(n.startswith("transformer.") for n in grads)  # text tower
    assert "logit_scale" in grads


def test_without_mixer_uses_equal_weights(tiny_backbone, colour_folder, tmp_path):
    caps, groups = _texts_files(tmp_path, colour_folder)
    cfg = L.LatteCLIPConfig(captions=str(caps), groups=str(groups), mixer=False, loss_ft=0.0, loss_form="separate")
    tr = L.LatteCLIP(cfg).build_trainer(_ctx(tiny_backbone, colour_folder, tmp_path / "r"))
    ds = tr.dataset_for_epoch(0)
    batch = torch.utils.data.default_collate([ds[i] for i in (1, 8)])
    rows = tr.branch_texts(tr.zs_labels[batch["index"]], batch["index"].tolist(), tr.zs_labels[batch["index"]].tolist())
    with torch.no_grad():
        strings = [s for r in rows for s in r]
        emb, index = tr.encode_strings(strings)
        t, tbar = tr.mixed(rows, emb, index, tr.zs_labels[batch["index"]])
        e = tiny_backbone.encode_text(rows[0])
    assert torch.allclose(tbar[0], e.mean(0), atol=1e-6)
    out = tr.training_step(batch, 0)
    assert "loss_ft" not in out and "loss_zs" in out


def test_only_selected_parameters_change_and_artifact_round_trip(tiny_backbone, colour_folder, tmp_path):
    caps, groups = _texts_files(tmp_path, colour_folder)
    cfg = L.LatteCLIPConfig(
        captions=str(caps), groups=str(groups), trainable=("visual_ln",), train_logit_scale=False,
        optim=OptimConfig(lr=1e-2, epochs=2, batch_size=8, weight_decay=0.0),
    )
    before = {n: p.detach().clone() for n, p in tiny_backbone.model.named_parameters()}
    ctx = _ctx(tiny_backbone, colour_folder, tmp_path / "run")
    fit = L.LatteCLIP(cfg).fit(ctx)
    changed = {n for n, p in tiny_backbone.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= set(tiny_backbone.resolve_params(["visual_ln"]))
    assert set(fit.tuned) == set(tiny_backbone.resolve_params(["visual_ln"]))
    assert len(fit.history) == 2 and {"loss", "pl_acc_ft", "pl_acc_zs"} <= set(fit.history[0])
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    # artifact: save, reload on a fresh base backbone, same logits
    rt = Runtime(device="cpu", progress=False, cache_dir=str(tmp_path / "cache"))
    logits = fit.classifier.predict(tiny_backbone, ctx.train, rt)
    fit.classifier.save(tmp_path / "art", tiny_backbone, fit.tuned)
    from labelless.backbones import load_backbone

    clf, bb = load_classifier(tmp_path / "art", backbone=load_backbone(tiny_backbone.spec))
    assert clf.kind == "latteclip" and torch.allclose(clf.predict(bb, ctx.train, rt), logits, atol=1e-5)


def test_resume_restores_prototypes(tiny_backbone, colour_folder, tmp_path):
    caps, groups = _texts_files(tmp_path, colour_folder)
    cfg = L.LatteCLIPConfig(captions=str(caps), groups=str(groups),
                            optim=OptimConfig(lr=1e-3, epochs=1, batch_size=9))
    first = L.LatteCLIP(cfg).fit(_ctx(tiny_backbone, colour_folder, tmp_path / "b"))
    bank0 = first.classifier.prototypes
    # the checkpoint carries the prototype bank: resuming the finished run restores it
    again = L.LatteCLIP(cfg).fit(_ctx(tiny_backbone, colour_folder, tmp_path / "b", resume=True))
    assert torch.equal(again.classifier.prototypes, bank0)
    init = L.LatteCLIP(cfg).build_trainer(_ctx(tiny_backbone, colour_folder, tmp_path / "c")).bank
    assert not torch.allclose(init, bank0)  # training moved the prototypes


def test_flyp_pl_trains_both_towers(tiny_backbone, colour_folder, tmp_path):
    before = {n: p.detach().clone() for n, p in tiny_backbone.model.named_parameters()}
    cfg = L.FlypPLConfig(optim=OptimConfig(lr=1e-3, epochs=1, batch_size=9))
    fit = L.FlypPL(cfg).fit(_ctx(tiny_backbone, colour_folder, tmp_path / "f"))
    changed = {n for n, p in tiny_backbone.model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith("visual.") for n in changed) and any(n.startswith("transformer.") for n in changed)
    assert fit.classifier.prototypes.shape == (3, tiny_backbone.embed_dim)
    assert "pl_acc" in fit.history[0]


def test_config_errors(tmp_path, tiny_backbone, colour_folder):
    with pytest.raises(ConfigError, match="captions"):
        L.LatteCLIPConfig(groups="g.json")
    with pytest.raises(ConfigError, match="groups"):
        L.LatteCLIPConfig(captions="c.json")
    with pytest.raises(ConfigError, match="at least one"):
        L.LatteCLIPConfig(use_class=False, use_image=False, use_group=False)
    with pytest.raises(ConfigError, match="not both 0"):
        L.LatteCLIPConfig(use_image=False, use_group=False, loss_ft=0, loss_zs=0)
    L.LatteCLIPConfig(use_image=False, use_group=False)  # Table 2 row 3: class text only
    (tmp_path / "c.json").write_text(json.dumps({"elsewhere/x.png": ["a"]}))
    (tmp_path / "g.json").write_text(json.dumps({"groups": [{"class": "purple", "caption": "x"}]}))
    ctx = _ctx(tiny_backbone, colour_folder, tmp_path / "r")
    with pytest.raises(ConfigError, match="matches any"):
        L.LatteCLIP(L.LatteCLIPConfig(captions=str(tmp_path / "c.json"), use_group=False)).build_trainer(ctx)
    with pytest.raises(ConfigError, match="purple"):
        L.LatteCLIP(L.LatteCLIPConfig(groups=str(tmp_path / "g.json"), use_image=False)).build_trainer(ctx)


def test_registered():
    from labelless.registry import CLASSIFIERS, METHODS

    assert "latteclip" in METHODS and "flyp-pl" in METHODS and "latteclip" in CLASSIFIERS


def test_cli_set_flags_complete_a_config_that_is_only_valid_with_them(colour_folder, tmp_path, capsys):
    """``labelless adapt --method latteclip --set captions=... --set groups=...`` without a recipe:
    the defaults alone are invalid (use_image needs captions), so the flags must be merged into
    the parameters before anything validates them (they were applied to the validated defaults,
    and the command failed with 'use_image needs captions'). Nested flags keep the recipe's
    other keys."""
    from labelless.cli import main

    caps, groups = _texts_files(tmp_path, colour_folder)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("method: latteclip\nparams:\n  optim:\n    epochs: 1\n    batch_size: 6\n")
    out = tmp_path / "run"
    rc = main(["adapt", "--method", "latteclip", "--config", str(recipe), "--model", "openclip:labelless-tiny:random",
               "--data", f"imagefolder:root={colour_folder}", "--out", str(out), "--no-progress",
               "--cache-dir", str(tmp_path / "cache"),
               "--set", f"captions={caps}", "--set", f"groups={groups}", "--set", "optim.lr=2e-5"])
    assert rc == 0, capsys.readouterr().err
    params = json.loads((out / "results.json").read_text())["config"]["method"]  # the resolved config
    assert params["captions"] == str(caps) and params["groups"] == str(groups)
    assert params["optim"]["lr"] == 2e-5 and params["optim"]["epochs"] == 1 and params["optim"]["batch_size"] == 6


def test_grad_accum_is_refused_with_the_reason():
    """Accumulating micro-batches would shrink the contrastive negatives (and LaTTe-CLIP's
    prototype update) to one micro-batch: refused, with the reason and the alternatives."""
    accum = OptimConfig(batch_size=128, grad_accum=4)
    for make in (lambda: L.LatteCLIPConfig(use_image=False, use_group=False, optim=accum),
                 lambda: L.FlypPLConfig(optim=accum)):
        with pytest.raises(ConfigError, match=r"grad_accum=4 .*negatives.*torchrun"):
            make()
    L.FlypPLConfig(optim=OptimConfig(batch_size=128, grad_accum=1))


def test_no_latteclip_recipe_suggests_grad_accum():
    import yaml

    recipes = sorted((Path(__file__).resolve().parents[1] / "recipes" / "latteclip").glob("*.yaml"))
    assert recipes
    for path in recipes:
        assert "grad_accum" not in path.read_text(), path.name
        optim = (yaml.safe_load(path.read_text()).get("params") or {}).get("optim") or {}
        assert optim.get("grad_accum", 1) == 1, path.name


def test_data_set_recipes_zero_shot_classifier_is_the_official_template_set():
    """The official y_zs classifier is ``build_zero_shot_classifier`` over the data set's
    ``templates`` list, one prompt per data set, the same as ``templates[0]`` (LatteCLIP
    ``src/training/abo.py``). The recipes' ``texts`` and ``label_texts`` must give exactly the
    prototype prompt per class (CoOp's EuroSAT prompt, e.g., is not LaTTe-CLIP's)."""
    import yaml

    from labelless.text import build_texts

    root = Path(__file__).resolve().parents[1] / "recipes" / "latteclip"
    checked = 0
    for path in sorted(root.glob("*.yaml")):
        recipe = yaml.safe_load(path.read_text())
        template = (recipe.get("params") or {}).get("prototype_template")
        if "testbed" in path.name or template is None:
            continue
        classes = ["river", "annual crop"]
        for key in ("texts", "label_texts"):
            if key in recipe:
                assert build_texts(recipe[key], classes) == {c: [template.replace("{c}", c)] for c in classes}, (path.name, key)
        checked += 1
    assert checked >= 11


def test_data_set_recipes_train_on_train_plus_val():
    """The paper (and the official preprocessing, ``data_train = train + val``) trains on CoOp's
    train + val splits: every data-set recipe's command line joins them."""
    root = Path(__file__).resolve().parents[1] / "recipes" / "latteclip"
    recipes = [p for p in sorted(root.glob("*.yaml")) if "testbed" not in p.name and "flyp" not in p.name]
    assert len(recipes) >= 10
    for path in recipes:
        assert ",split=train+val" in path.read_text(), path.name


def test_flyp_pl_pseudo_label_switch(tiny_backbone, colour_folder, tmp_path):
    """``recalculated`` (paper, default): the current model's prediction with the training
    prompts; ``zeroshot`` (official code): the frozen initial model's zero-shot class with the
    class texts, fixed however the model moves."""
    assert L.FlypPLConfig().pseudo_labels == "recalculated"
    with pytest.raises(ConfigError, match="pseudo_labels"):
        L.FlypPLConfig(pseudo_labels="frozen")
    ctx = _ctx(tiny_backbone, colour_folder, tmp_path / "z")
    zs = L.zero_shot_labels(ctx)[0]
    official = L.FlypTrainer(ctx, L.FlypPLConfig(pseudo_labels="zeroshot"))
    paper = L.FlypTrainer(ctx, L.FlypPLConfig())
    assert paper.zs_labels is None and torch.equal(official.zs_labels, zs)
    ds = official.dataset_for_epoch(0)
    batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    torch.manual_seed(0)
    with torch.no_grad():
        for p in tiny_backbone.model.parameters():  # the model moves away from its start
            p.add_(0.5 * torch.randn_like(p))
        img = official.images(batch)
        prompts = F.normalize(tiny_backbone.encode_text(paper.class_prompts), dim=-1)
    assert torch.equal(official.pseudo_labels(img, batch["index"]), zs[batch["index"]])
    assert torch.equal(paper.pseudo_labels(img, batch["index"]), (img @ prompts.T).argmax(-1))
    assert not torch.equal(paper.pseudo_labels(img, batch["index"]), zs[batch["index"]])


@pytest.mark.parametrize("w_ft, w_zs", [(1.0, 1.0), (0.0, 1.0), (1.0, 0.0), (0.5, 2.0)])
def test_loss_forms_official_and_separate(tiny_backbone, colour_folder, tmp_path, w_ft, w_zs):
    """official: ``w_ft * (L_ft + w_zs * L_zs)`` with both branches always updating the
    prototypes (so w_ft = 0, Table 3 "w/o L_ft", trains only the prototypes); separate:
    ``w_ft * L_ft + w_zs * L_zs`` with a zero-weight branch skipped. Same at 1, 1."""
    caps, groups = _texts_files(tmp_path, colour_folder)
    results = {}
    for form in ("official", "separate"):
        cfg = L.LatteCLIPConfig(captions=str(caps), groups=str(groups), loss_ft=w_ft, loss_zs=w_zs, loss_form=form)
        tr = L.LatteCLIP(cfg).build_trainer(_ctx(tiny_backbone, colour_folder, tmp_path / form))
        ds = tr.dataset_for_epoch(0)
        batch = torch.utils.data.default_collate([ds[i] for i in (0, 5, 9, 14)])
        bank0 = tr.bank.clone()
        out = tr.training_step(batch, 0)
        results[form] = (out, bank0, tr.bank.clone())
    out, bank0, bank1 = results["official"]
    torch.testing.assert_close(out["loss"], w_ft * (out["loss_ft"] + w_zs * out["loss_zs"]))
    assert not torch.equal(bank1, bank0)
    sep, _, sep_bank = results["separate"]
    expected = sum(w * sep[f"loss_{n}"] for n, w in (("ft", w_ft), ("zs", w_zs)) if w > 0)
    torch.testing.assert_close(sep["loss"], expected)
    assert ("loss_ft" in sep) == (w_ft > 0) and ("loss_zs" in sep) == (w_zs > 0)
    if w_ft == 1.0 and w_zs == 1.0:
        assert torch.equal(out["loss"], sep["loss"]) and torch.equal(bank1, sep_bank)
    if w_ft == 0.0:
        assert float(out["loss"].detach()) == 0.0 and float(sep["loss"].detach()) > 0.0


def test_pseudo_labels_and_mixer_weights_stay_fp32_under_bf16_autocast(tiny_backbone, colour_folder, tmp_path,
                                                                       monkeypatch):
    """Inside the loop's bf16 autocast (exercised on CPU) FLYP-PL's argmax and LaTTe-CLIP's
    top1 - top2 mixer weights are computed in fp32: a margin of 1e-4, far below bf16's
    resolution, still decides."""
    ctx = _ctx(tiny_backbone, colour_folder, tmp_path / "p")
    flyp = L.FlypTrainer(ctx, L.FlypPLConfig())
    d = tiny_backbone.embed_dim
    e0, e1 = torch.eye(d)[0], torch.eye(d)[1]
    classes = torch.stack([e0, F.normalize(e0 + 0.02 * e1, dim=0), -e0])  # (3, d)
    img = F.normalize(e0 + 0.015 * e1, dim=0)[None]  # closer to class 1 by ~1e-4
    monkeypatch.setattr(tiny_backbone, "encode_text", lambda texts: classes)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = flyp.pseudo_labels(img, torch.tensor([0]))
        naive = (img @ classes.T).argmax(-1)  # what bf16 autocast alone gives
    assert int(y) == 1 and int(naive) != 1
    monkeypatch.undo()

    caps, groups = _texts_files(tmp_path, colour_folder)
    tr = L.LatteCLIP(L.LatteCLIPConfig(captions=str(caps), groups=str(groups))).build_trainer(ctx)
    seen = []
    real = L.mixer_weights

    def spy(texts, prototypes, mask=None):
        w = real(texts, prototypes, mask)
        seen.append((torch.is_autocast_enabled("cpu"), w.dtype))
        return w

    monkeypatch.setattr(L, "mixer_weights", spy)
    ds = tr.dataset_for_epoch(0)
    batch = torch.utils.data.default_collate([ds[i] for i in (0, 5, 9)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tr.training_step(batch, 0)
    assert seen and all(state == (False, torch.float32) for state in seen)
    assert torch.isfinite(out["loss"].float())
