"""Scoring functions: hand-computed 2-D cases, identities between CLIP, CuPL and WCA, masks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from labelless.errors import ConfigError
from labelless.registry import SCORERS
from labelless.scoring import (
    ClassTextFeat,
    ImageFeat,
    class_prototypes,
    clip_logits,
    crop_weights,
    cupl_logits,
    text_weights,
    wca_scores,
)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def rand_unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def random_problem(B=3, N=5, C=4, M=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed + 1)
    counts = torch.randint(1, M + 1, (C,), generator=g)
    mask = torch.arange(M)[None, :] < counts[:, None]  # (C, M)
    return dict(
        global_embed=rand_unit(B, d, seed=seed),
        crop_embeds=rand_unit(B, N, d, seed=seed + 2),
        desc_embeds=rand_unit(C, M, d, seed=seed + 3) * mask[..., None],
        mask=mask,
        label_embeds=rand_unit(C, d, seed=seed + 4),
    )


# ---------------------------------------------------------------------------- clip


def test_clip_logits_by_hand():
    img = t([1.0, 0.0], [0.0, 2.0])  # second row unnormalised on purpose
    cls = t([1.0, 0.0], [0.0, 1.0], [3.0, 4.0])  # (3, 4) -> (0.6, 0.8)
    out = clip_logits(img, cls, scale=1.0)
    assert torch.allclose(out, t([1.0, 0.0, 0.6], [0.0, 1.0, 0.8]))
    assert torch.allclose(clip_logits(img, cls), 100 * out)


def test_class_prototypes_by_hand_and_mask():
    embeds = t([[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [5.0, 5.0]])  # (2, 2, 2); [1, 1] is padding
    mask = torch.tensor([[True, True], [True, False]])
    r = 1 / math.sqrt(2)
    assert torch.allclose(class_prototypes(embeds, mask), t([r, r], [0.0, 1.0]))
    # without a mask every entry counts: class 1 = norm((0, 1) + (r, r))
    expected = F.normalize(t([r, 1 + r]), dim=-1)[0]
    assert torch.allclose(class_prototypes(embeds)[1], expected)


def test_class_prototypes_rejects_empty_class():
    with pytest.raises(ValueError, match=r"classes \[1\]"):
        class_prototypes(torch.ones(2, 2, 3), torch.tensor([[True, False], [False, False]]))


# ---------------------------------------------------------------------------- cupl


def test_cupl_with_one_description_equals_clip():
    img, desc = rand_unit(5, 8, seed=1), rand_unit(4, 1, 8, seed=2)  # (B, d), (C, 1, d)
    mask = torch.ones(4, 1, dtype=torch.bool)
    assert torch.allclose(cupl_logits(img, desc, mask), clip_logits(img, desc[:, 0]))


def test_cupl_ignores_padding():
    p = random_problem()
    mask = p["mask"]
    garbage = p["desc_embeds"].clone()
    garbage[~mask] = 7.0  # anything in padded slots must not matter
    a = cupl_logits(p["global_embed"], p["desc_embeds"], mask)
    b = cupl_logits(p["global_embed"], garbage, mask)
    assert torch.allclose(a, b)
    # and equals the per-class loop over real descriptions only
    for c in range(mask.shape[0]):
        proto = F.normalize(p["desc_embeds"][c, mask[c]].mean(0), dim=-1)
        assert torch.allclose(a[:, c], 100 * p["global_embed"] @ proto)


# ---------------------------------------------------------------------------- wca weights


def test_crop_weights_by_hand():
    v = t([1.0, 0.0])
    crops = t([[1.0, 0.0], [0.0, 3.0]])  # cos = 1, 0
    e = math.e
    # image_scale = 0 -> multiplier exp(0) = 1: softmax([1, 0])
    assert torch.allclose(crop_weights(v, crops, 0.0), t([e / (e + 1), 1 / (e + 1)]))
    # image_scale = log 2 -> multiplier 2: softmax([2, 0])
    w = crop_weights(v, crops, math.log(2.0))
    assert torch.allclose(w, t([e**2 / (e**2 + 1), 1 / (e**2 + 1)]))


def test_crop_weights_sum_to_one():
    p = random_problem(B=4, N=7)
    w = crop_weights(p["global_embed"], p["crop_embeds"])
    assert w.shape == (4, 7)
    assert torch.allclose(w.sum(-1), torch.ones(4, dtype=w.dtype))
    assert bool((w >= 0).all())


def test_text_weights_by_hand_and_mask():
    desc = t([[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]], [[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    label = t([1.0, 0.0], [1.0, 0.0])
    u = text_weights(desc, mask, label, text_scale=0.0)
    e = math.e
    assert torch.allclose(u, t([e / (e + 1), 1 / (e + 1), 0.0], [1.0, 0.0, 0.0]))


def test_text_weights_sum_to_one_over_real_descriptions():
    p = random_problem()
    u = text_weights(p["desc_embeds"], p["mask"], p["label_embeds"])
    assert torch.allclose(u.sum(-1), torch.ones(u.shape[0], dtype=u.dtype))
    assert bool((u[~p["mask"]] == 0).all())


# ---------------------------------------------------------------------------- wca scores


def test_wca_by_hand():
    # v = (1, 0); crops (1, 0), (0, 1); class 0: descriptions (1, 0), (0, 1) with label (1, 0);
    # class 1: one description (0, 1). With both scales 0 the weights are softmax([1, 0]) = (a, b).
    e = math.e
    a, b = e / (e + 1), 1 / (e + 1)
    args = (
        t([1.0, 0.0]),
        t([[1.0, 0.0], [0.0, 1.0]]),
        t([[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 0.0]]),
        torch.tensor([[True, True], [True, False]]),
        t([1.0, 0.0], [0.0, 1.0]),
    )
    # weighted image (a, b); weighted texts (a, b) and (0, 1)
    raw = wca_scores(*args, image_scale=0.0, text_scale=0.0, normalize=False)
    assert torch.allclose(raw, t([a * a + b * b, b]))
    r = math.sqrt(a * a + b * b)
    normed = wca_scores(*args, image_scale=0.0, text_scale=0.0, normalize=True)
    assert torch.allclose(normed, t([1.0, b / r]))


def test_wca_one_global_crop_uniform_text_equals_cupl():
    p = random_problem()
    v = p["global_embed"]
    uniform = p["mask"].double() / p["mask"].sum(-1, keepdim=True)  # (C, M)
    s = wca_scores(
        v, v[:, None, :], p["desc_embeds"], p["mask"], p["label_embeds"], desc_weights=uniform
    )
    expected = cupl_logits(v, p["desc_embeds"], p["mask"], scale=1.0)
    assert torch.allclose(s, expected)
    # text_scale -> -inf makes the softmax uniform too (exp(-40) ~ 4e-18)
    s2 = wca_scores(
        v, v[:, None, :], p["desc_embeds"], p["mask"], p["label_embeds"], text_scale=-40
    )
    assert torch.allclose(s2, expected)


def test_wca_unnormalised_equals_double_loop():
    p = random_problem(seed=3)
    s = wca_scores(**p, normalize=False)
    w = crop_weights(p["global_embed"], p["crop_embeds"])  # (B, N)
    u = text_weights(p["desc_embeds"], p["mask"], p["label_embeds"])  # (C, M)
    B, N = w.shape
    C, M = u.shape
    expected = torch.zeros(B, C, dtype=s.dtype)
    for i in range(B):
        for c in range(C):
            for n in range(N):
                for m in range(M):
                    if p["mask"][c, m]:
                        cos = F.cosine_similarity(
                            p["crop_embeds"][i, n], p["desc_embeds"][c, m], dim=0
                        )
                        expected[i, c] += w[i, n] * u[c, m] * cos
    assert torch.allclose(s, expected)


def test_wca_ignores_padding_and_input_norms():
    p = random_problem(seed=5)
    q = dict(p)
    q["desc_embeds"] = p["desc_embeds"].clone()
    q["desc_embeds"][~p["mask"]] = 3.0
    q["crop_embeds"] = p["crop_embeds"] * 4.0
    q["global_embed"] = p["global_embed"] * 0.5
    for normalize in (True, False):
        assert torch.allclose(
            wca_scores(**p, normalize=normalize), wca_scores(**q, normalize=normalize)
        )


def test_wca_image_weights_override():
    p = random_problem(seed=7, N=4)
    uniform = torch.full((3, 4), 0.25, dtype=torch.float64)
    s = wca_scores(**p, image_weights=uniform, normalize=False)
    u = text_weights(p["desc_embeds"], p["mask"], p["label_embeds"])
    txt = torch.einsum("cm,cmd->cd", u, p["desc_embeds"])
    assert torch.allclose(s, p["crop_embeds"].mean(1) @ txt.t())


def test_wca_needs_label_or_desc_weights():
    p = random_problem()
    p["label_embeds"] = None
    with pytest.raises(ValueError, match="label_embeds"):
        wca_scores(**p)
    ones = p["mask"].double()  # FAIR's u = 1
    assert wca_scores(**p, desc_weights=ones).shape == (3, 4)


# ---------------------------------------------------------------------------- registered scorers


def test_scorers_registered_with_docs():
    for name in ("clip", "cupl", "wca"):
        assert name in SCORERS and SCORERS.describe(name)


def test_scorers_uniform_signature():
    p = random_problem()
    image = ImageFeat(p["global_embed"], p["crop_embeds"])
    text = ClassTextFeat(p["desc_embeds"], p["mask"], p["label_embeds"])
    for name in ("clip", "cupl", "wca"):
        out = SCORERS.get(name)(image, text)
        assert out.shape == (3, 4), name
    assert torch.allclose(
        SCORERS.get("clip")(image, text), clip_logits(p["global_embed"], p["label_embeds"])
    )
    assert torch.allclose(
        SCORERS.get("wca")(image, text, scale=1.0, normalize=False),
        wca_scores(**p, normalize=False),
    )


def test_clip_scorer_falls_back_to_mean_and_equals_cupl():
    p = random_problem()
    image = ImageFeat(p["global_embed"])
    text = ClassTextFeat(p["desc_embeds"], p["mask"])
    assert torch.allclose(SCORERS.get("clip")(image, text), SCORERS.get("cupl")(image, text))


def test_wca_scorer_clear_errors():
    p = random_problem()
    text = ClassTextFeat(p["desc_embeds"], p["mask"], p["label_embeds"])
    with pytest.raises(ConfigError, match="crop embeddings"):
        SCORERS.get("wca")(ImageFeat(p["global_embed"]), text)
    with pytest.raises(ConfigError, match="label embeddings"):
        SCORERS.get("wca")(
            ImageFeat(p["global_embed"], p["crop_embeds"]),
            ClassTextFeat(p["desc_embeds"], p["mask"]),
        )
