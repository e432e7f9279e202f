"""Region scoring (pure functions), mask regions, the SAM view and the region-probe plumbing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from labelless.bench.region_sweep import region_sweep, sweep_run_configs
from labelless.errors import ConfigError
from labelless.methods.base import Runtime, load_classifier
from labelless.methods.region_probe import (
    PAPER_PROTOCOL,
    RegionFeatures,
    RegionProbeConfig,
    confident_per_class,
    train_linear_head,
)
from labelless.scoring.regions import (
    aggregate_regions,
    entropy,
    global_pseudo_labels,
    local_pseudo_labels,
    region_representation,
    region_scores,
    score_entropy,
    score_hard_margin,
    score_region_global,
    score_region_text,
    score_soft_margin,
    topk_weights,
)
from labelless.views.sam import (
    SamRegionsView,
    mask_bbox,
    mask_to_region,
    select_masks,
    valid_regions,
)

# one image, two regions, three classes
SIMS = torch.tensor([[[0.9, 0.5, 0.1], [0.2, 0.6, 0.4]]])  # (1, 2, 3)


# ----------------------------------------------------------------------------- scores
def test_region_text_and_hard_margin_by_hand():
    t = torch.tensor([0])
    assert torch.allclose(score_region_text(SIMS, t), torch.tensor([[0.9, 0.2]]))
    assert torch.allclose(score_hard_margin(SIMS, t), torch.tensor([[0.9 - 0.5, 0.2 - 0.6]]))
    local = local_pseudo_labels(SIMS)  # (1, 2): [0, 1]
    assert local.tolist() == [[0, 1]]
    assert torch.allclose(score_hard_margin(SIMS, local), torch.tensor([[0.4, 0.6 - 0.4]]))


def test_soft_margin_by_hand_and_limits():
    t = torch.tensor([0])
    tau = 2.0
    a = torch.softmax(torch.tensor([tau * 0.5, tau * 0.1]), 0)
    want0 = 0.9 - (a[0] * 0.5 + a[1] * 0.1)
    got = score_soft_margin(SIMS, t, tau)
    assert got[0, 0].item() == pytest.approx(want0.item(), abs=1e-6)
    # tau -> inf: the hard margin; tau = 0: target minus the mean of the negatives
    assert torch.allclose(score_soft_margin(SIMS, t, 1e4), score_hard_margin(SIMS, t), atol=1e-5)
    assert torch.allclose(score_soft_margin(SIMS, t, 0.0), torch.tensor([[0.9 - 0.3, 0.2 - 0.5]]), atol=1e-6)


def test_soft_margin_approaches_hard_margin_monotonically():
    torch.manual_seed(0)
    sims = torch.rand(4, 6, 5) * 2 - 1
    t = torch.randint(0, 5, (4,))
    hard = score_hard_margin(sims, t)
    gaps = [(score_soft_margin(sims, t, tau) - hard).abs().max().item() for tau in (1, 10, 100, 1000)]
    assert all(a >= b for a, b in zip(gaps, gaps[1:]))
    assert gaps[-1] < 1e-3
    assert (score_soft_margin(sims, t, 5.0) >= hard - 1e-6).all()  # soft >= hard: mean <= max


def test_entropy_score_one_hot_and_uniform():
    one_hot = torch.tensor([0.0, 1.0, 0.0])
    assert entropy(one_hot).item() == pytest.approx(0.0, abs=1e-6)
    assert entropy(torch.full((4,), 0.25)).item() == pytest.approx(math.log(4), abs=1e-6)
    # huge tau makes p_i one-hot on the argmax: score = 1 for the argmax target, 0 otherwise
    s = score_entropy(SIMS, torch.tensor([0]), tau=1e4, lam=0.5)
    assert torch.allclose(s, torch.tensor([[1.0, 0.0]]), atol=1e-5)
    # tau = 0: uniform p: 1/C - lambda log C for every region
    s0 = score_entropy(SIMS, torch.tensor([2]), tau=0.0, lam=0.5)
    assert torch.allclose(s0, torch.full((1, 2), 1 / 3 - 0.5 * math.log(3)), atol=1e-6)


def test_region_global_and_global_pseudo_labels():
    g = torch.tensor([[1.0, 0.0]])
    f = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]])
    assert torch.allclose(score_region_global(f, g), torch.tensor([[1.0, 0.0, 1 / math.sqrt(2)]]), atol=1e-6)
    texts = torch.tensor([[0.0, 1.0], [1.0, 0.1]])
    assert global_pseudo_labels(g, texts).tolist() == [1]


def test_region_scores_dispatch_targets():
    torch.manual_seed(1)
    f = F.normalize(torch.randn(3, 4, 8), dim=-1)
    g = F.normalize(torch.randn(3, 8), dim=-1)
    t = F.normalize(torch.randn(5, 8), dim=-1)
    sims = torch.einsum("bld,cd->blc", f, t)
    gl = region_scores("region_text", f, g, t, "global")
    assert torch.allclose(gl, score_region_text(sims, global_pseudo_labels(g, t)))
    lo = region_scores("region_text", f, g, t, "local")
    assert torch.allclose(lo, sims.max(-1).values)  # own argmax: the top similarity
    y = torch.tensor([0, 1, 2])
    assert torch.allclose(region_scores("hard_margin", f, g, t, y), score_hard_margin(sims, y))
    with pytest.raises(ValueError, match="unknown region scoring"):
        region_scores("bogus", f, g, t)


# ----------------------------------------------------------------------------- aggregation
def test_topk_weights_sum_to_one_and_select_top():
    s = torch.tensor([[0.1, 0.9, 0.5, -1.0], [3.0, 2.0, 1.0, 0.0]])
    w = topk_weights(s, 2)
    assert torch.allclose(w.sum(-1), torch.ones(2))
    assert (w > 0).sum(-1).tolist() == [2, 2]
    assert w[0, 1] > w[0, 2] > 0 and w[0, 0] == 0 and w[0, 3] == 0
    # plain softmax over the kept scores
    e = torch.exp(torch.tensor([0.9, 0.5]))
    assert torch.allclose(w[0, [1, 2]], e / e.sum())
    assert torch.allclose(topk_weights(s, 0), torch.softmax(s, -1))  # 0 = all


def test_topk_weights_respect_padding():
    s = torch.tensor([[5.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
    valid = torch.tensor([[False, True, True], [False, False, False]])
    w = topk_weights(s, 5, valid)
    assert w[0, 0] == 0 and torch.allclose(w[0].sum(), torch.tensor(1.0))
    assert torch.equal(w[1], torch.zeros(3))  # no valid region: zero weights, no NaN


def test_region_representation_shapes_and_fallback():
    torch.manual_seed(2)
    f = F.normalize(torch.randn(2, 5, 4), dim=-1)
    g = F.normalize(torch.randn(2, 4), dim=-1)
    t = F.normalize(torch.randn(3, 4), dim=-1)
    assert region_representation("global_linear", f, g, t).shape == (2, 4)
    avg = region_representation("average", f, g, t)
    assert torch.allclose(avg[:, 4:], f.mean(1)) and torch.allclose(avg[:, :4], g)
    # k = 1: r is exactly the best region
    rep = region_representation("soft_margin", f, g, t, k=1, tau=10)
    best = region_scores("soft_margin", f, g, t, tau=10).argmax(-1)
    assert torch.allclose(rep[:, 4:], f[torch.arange(2), best])
    valid = torch.tensor([[True] * 5, [False] * 5])
    rep = region_representation("entropy", f, g, t, valid=valid)
    assert torch.allclose(rep[1, 4:], g[1])  # no region: r = g
    w = topk_weights(torch.zeros(2, 5), 0)
    assert torch.allclose(aggregate_regions(f, w), f.mean(1))


# ----------------------------------------------------------------------------- masks -> regions
def _checker(h=20, w=30):
    arr = np.zeros((h, w, 3), np.uint8)
    arr[..., 0] = np.arange(w)[None, :] * 5
    arr[..., 1] = np.arange(h)[:, None] * 7
    arr[..., 2] = 200
    return Image.fromarray(arr)


def test_mask_to_region_box_and_fill():
    img = _checker()
    mask = np.zeros((20, 30), bool)
    mask[5:10, 8:20] = True
    mask[5, 8] = False  # a hole inside the box
    assert mask_bbox(mask) == (8, 5, 20, 10)
    region = mask_to_region(img, mask, fill="black")
    assert region.size == (12, 5)
    arr = np.asarray(region)
    assert (arr[0, 0] == 0).all()  # the hole is filled
    assert (arr[1, 1] == np.asarray(img)[6, 9]).all()  # inside pixels kept
    mean = mask_to_region(img, mask, fill="mean", mean=(0.5, 0.25, 0.0))
    assert np.asarray(mean)[0, 0].tolist() == [128, 64, 0]
    plain = mask_to_region(img, mask, fill="none")
    assert (np.asarray(plain)[0, 0] == np.asarray(img)[5, 8]).all()
    assert mask_bbox(np.zeros((3, 3), bool)) is None
    with pytest.raises(ValueError):
        mask_to_region(img, np.zeros((20, 30), bool))
    with pytest.raises(ValueError, match="fill"):
        mask_to_region(img, mask, fill="blue")


def test_select_masks_area_and_count():
    masks = np.zeros((4, 10, 10), bool)
    masks[0, :1, :1] = True  # 1 %
    masks[1, :5, :5] = True  # 25 %
    masks[2, :6, :6] = True  # 36 %
    masks[3] = True  # 100 %
    scores = np.array([0.9, 0.2, 0.8, 0.99])
    assert select_masks(masks, scores, 5, (0.05, 0.5)) == [2, 1]
    assert select_masks(masks, scores, 1, (0.05, 0.5)) == [2]
    assert select_masks(masks[:0], scores[:0], 3, (0, 1)) == []


def _tiny_sam():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    vc = transformers.SamVisionConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64, image_size=64,
        patch_size=8, output_channels=16, global_attn_indexes=[1], window_size=4, num_pos_feats=8,
    )
    pc = transformers.SamPromptEncoderConfig(hidden_size=16, image_size=64, patch_size=8, mask_input_channels=4)
    mc = transformers.SamMaskDecoderConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_dim=32, iou_head_hidden_dim=16
    )
    cfg = transformers.SamConfig(
        vision_config=vc.to_dict(), prompt_encoder_config=pc.to_dict(), mask_decoder_config=mc.to_dict()
    )
    model = transformers.SamModel(cfg).eval()
    proc = transformers.SamImageProcessor(
        size={"longest_edge": 64}, pad_size={"height": 64, "width": 64},
        mask_size={"longest_edge": 16}, mask_pad_size={"height": 16, "width": 16},
    )
    return model, proc


SAM_OPTS = dict(points_per_side=3, pred_iou_thresh=0.0, stability_thresh=0.0, nms_thresh=1.0)


def test_sam_view_tiny_random_model(tiny_backbone):
    model, proc = _tiny_sam()
    view = SamRegionsView(tiny_backbone, model=None, n=4, area=(0.0, 1.0), sam_model=model,
                          sam_processor=proc, **SAM_OPTS)
    img = _checker(48, 40)
    regions = view.regions(img)
    assert 1 <= len(regions) <= 4
    for r in regions:
        assert r.width <= 40 and r.height <= 48
    x = view(img, np.random.default_rng(0))
    s = tiny_backbone.image_size
    assert x.shape == (4, 3, s, s)
    # padding rows are exact zeros and are recognised from the embeddings
    n_real = len(regions)
    assert torch.equal(x[n_real:], torch.zeros_like(x[n_real:]))
    from labelless.views.sam import pad_embedding

    with torch.no_grad():
        emb = tiny_backbone.encode_image(x).embeds[None]  # (1, 4, d)
    assert valid_regions(emb, pad_embedding(tiny_backbone)).sum().item() == n_real
    cfg = view.config()
    assert cfg["view"] == "sam" and cfg["n"] == 4 and cfg["model"].startswith("module:")
    # an impossible area range leaves only padding
    empty = SamRegionsView(tiny_backbone, model=None, n=2, area=(0.999, 1.0), sam_model=model,
                           sam_processor=proc, **SAM_OPTS)
    assert empty.regions(_checker(48, 40)) == [] or all(r.size == (40, 48) for r in empty.regions(_checker(48, 40)))


def test_sam_view_config_errors(tiny_backbone):
    with pytest.raises(ConfigError, match="fill"):
        SamRegionsView(tiny_backbone, fill="blue")
    with pytest.raises(ConfigError, match="area"):
        SamRegionsView(tiny_backbone, area=(0.6, 0.2))


# ----------------------------------------------------------------------------- probe pieces
def test_config_validation_and_area_to_crop_scale():
    cfg = RegionProbeConfig(area=(0.16, 0.64))
    assert cfg.crop_scale == pytest.approx((0.4, 0.8))
    for bad in ({"area": (0.5, 0.2)}, {"k": -1}, {"keep_fraction": 0.0}, {"n_regions": 0}):
        with pytest.raises(ConfigError):
            RegionProbeConfig(**bad)


def test_crop_ratio_option_default_square(tiny_backbone):
    """The paper samples rectangular crops; square stays the default (until measured on the
    dev suite) and crop_ratio=(r0, r1) gives the view rectangles of the same area range."""
    from labelless.methods.region_probe import region_view

    assert RegionProbeConfig().crop_ratio is None
    square = region_view(tiny_backbone, RegionProbeConfig(area=(0.16, 0.64)))
    assert square.cfg.ratio is None and "ratio" not in square.config()
    rect = region_view(tiny_backbone, RegionProbeConfig(area=(0.16, 0.64), crop_ratio=[0.75, 4 / 3]))
    assert rect.cfg.ratio == (0.75, 4 / 3) and rect.cfg.scale == square.cfg.scale
    with pytest.raises(ConfigError, match="crop_ratio"):
        RegionProbeConfig(crop_ratio=(2.0, 1.0))


def test_confident_per_class():
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    conf = torch.tensor([0.1, 0.9, 0.5, 0.7, 0.3, 0.2])
    keep = confident_per_class(labels, conf, 3, 0.5)
    assert keep.tolist() == [False, True, False, True, True, False]


def test_linear_head_learns_separable_data():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(40, 4) + 3, torch.randn(40, 4) - 3])
    y = torch.cat([torch.zeros(40), torch.ones(40)]).long()
    cfg = RegionProbeConfig(epochs=10, lr=0.05)
    w, b, hist = train_linear_head(x, y, 2, cfg, seed=0)
    assert w.shape == (2, 4) and b.shape == (2,) and len(hist) == 10
    assert ((x @ w.t() + b).argmax(-1) == y).float().mean() == 1.0
    w2, _, _ = train_linear_head(x, y, 2, cfg, seed=0)
    assert torch.equal(w, w2)  # seeded


def _synthetic_feats(n=60, regions=6, d=8, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = F.normalize(torch.randn(c, d, generator=g), dim=-1)
    y = torch.arange(n) % c
    glob = F.normalize(t[y] + 0.8 * torch.randn(n, d, generator=g), dim=-1)
    reg = F.normalize(t[y][:, None] + 1.2 * torch.randn(n, regions, d, generator=g), dim=-1)
    return RegionFeatures(glob, reg, y), t


def test_region_sweep_rows_and_protocols():
    tr, t = _synthetic_feats()
    ev, _ = _synthetic_feats(seed=1)
    rows = region_sweep({"crops": tr}, {"crops": ev}, t, RegionProbeConfig(epochs=2), labels=("pseudo", "true"),
                        ks=(2, 0))
    t1 = [r for r in rows if r["table"] == 1]
    assert len(t1) == 2 * (3 + 8)
    assert {r["protocol"] for r in rows if r["labels"] == "true"} == {PAPER_PROTOCOL}
    assert {r["target"] for r in rows if r["table"] == 2} == {"true"}
    assert {r["k"] for r in rows if r["table"] == 3} == {2, "ALL"}
    assert all(0 <= r["acc"] <= 100 for r in rows)
    # no training labels: the paper protocol and the oracle are skipped
    unl = RegionFeatures(tr.global_embed, tr.regions, torch.full((len(tr),), -1))
    rows = region_sweep({"crops": unl}, {"crops": ev}, t, RegionProbeConfig(epochs=1), ks=(2,))
    assert {r["labels"] for r in rows} == {"pseudo"} and not [r for r in rows if r["table"] == 2]


def test_sweep_run_configs_shape():
    runs = sweep_run_configs("M", "D", "E", candidates=("crops", "sam"))
    assert all(set(r) == {"method", "model", "data", "eval_data", "texts", "params"} for r in runs)
    assert all(r["method"] == "region-probe" for r in runs)
    keys = [json.dumps(r["params"], sort_keys=True) for r in runs]
    assert len(keys) == len(set(keys))
    RegionProbeConfig(**runs[-1]["params"])


# ----------------------------------------------------------------------------- end to end
def test_adapt_artifact_roundtrip_and_true_label_protocol(tmp_path, colour_folder):
    from conftest import TINY

    from labelless.runner import RunConfig, run

    rt = Runtime(device="cpu", batch_size=16, progress=False, cache_dir=str(tmp_path / "cache"))
    spec = f"imagefolder:root={colour_folder}"
    res = run(RunConfig(method="region-probe", model=TINY, data=spec, out=str(tmp_path / "run"),
                        texts="names", params={"n_regions": 4, "epochs": 2, "k": 2}, runtime=rt))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "label-free" in json.dumps(results)
    clf, backbone = load_classifier(tmp_path / "run" / "classifier")
    assert clf.kind == "region-probe" and clf.weight.shape == (3, 2 * backbone.embed_dim)
    from labelless.data import build_dataset

    ds = build_dataset(spec)
    logits = clf.predict(backbone, ds, rt)
    assert torch.allclose(logits, res["fit"].classifier.predict(backbone, ds, rt), atol=1e-5)
    # the paper's protocol is clearly marked and refuses unlabelled data
    run(RunConfig(method="region-probe", model=TINY, data=spec, out=str(tmp_path / "paper"), texts="names",
                  params={"n_regions": 4, "epochs": 1, "labels": "true"}, runtime=rt))
    assert PAPER_PROTOCOL in (tmp_path / "paper" / "results.json").read_text()
    with pytest.raises(ConfigError, match="labelled training data"):
        run(RunConfig(method="region-probe", model=TINY, data=f"folder:root={colour_folder}",
                      classes="red,green,blue", out=str(tmp_path / "bad"), texts="names",
                      params={"labels": "true", "epochs": 1}, runtime=rt))


def test_sam_probe_end_to_end(tmp_path, tiny_backbone, colour_folder):
    from labelless.data import build_dataset
    from labelless.methods.region_probe import extract_region_features

    model, proc = _tiny_sam()
    ds = build_dataset(f"imagefolder:root={colour_folder}").subset([0, 7, 14])
    cfg = RegionProbeConfig(regions="sam", n_regions=3, area=(0.01, 1.0), sam_points_per_side=3,
                            sam_pred_iou_thresh=0.0, sam_stability_thresh=0.0, sam_nms_thresh=1.0)
    rt = Runtime(device="cpu", batch_size=4, progress=False, cache_dir=None)
    feats = extract_region_features(tiny_backbone, ds, cfg, rt, model, proc)
    assert feats.regions.shape == (3, 3, tiny_backbone.embed_dim)
    assert feats.valid is not None and feats.valid.any(1).all()


def test_closed_form_head_matches_torch_adamw():
    torch.manual_seed(0)
    x, y = torch.randn(100, 6), torch.randint(0, 4, (100,))
    cfg = RegionProbeConfig(epochs=3, dropout=0.0, lr=1e-2)
    w, b, _ = train_linear_head(x, y, 4, cfg, seed=3)
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    head = torch.nn.Linear(6, 4)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=cfg.weight_decay)
    for _ in range(3):
        order = torch.randperm(100, generator=gen)
        for i in range(0, 100, cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            loss = F.cross_entropy(head(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert torch.allclose(w, head.weight.detach(), atol=1e-6)
    assert torch.allclose(b, head.bias.detach(), atol=1e-6)
