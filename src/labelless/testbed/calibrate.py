"""Calibrate the testbed: how well do zero-shot and cheap label-free adaptations do on it?

Run ``python -m labelless.testbed.calibrate``. It builds (or reuses) the testbed, loads the
checkpoint through open_clip, and reports test accuracy of

* zero-shot with class names ("a photo of a {name}."),
* zero-shot with descriptions (CuPL: normalised mean of the description embeddings),
* WCA (random crops weighted by their similarity to the global view, descriptions weighted by
  their similarity to the label prompt),
* probe (a): a linear head on frozen global features trained on description zero-shot
  pseudo-labels of the train split,
* probe (b): pseudo-label self-training of the visual LayerNorms with the description
  prototypes as a fixed classifier (pseudo-labels from the plain view, loss on an augmented
  view).

Self-contained on purpose (only open_clip + torch, none of the toolkit's methods), so its numbers
are an independent reference to set the testbed's difficulty and to compare the toolkit's results
with by hand. No test runs it.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from labelless.testbed.build import Testbed, ensure_testbed


def load_model(tb: Testbed):
    """``(model, preprocess, tokenizer)`` of the testbed checkpoint via open_clip."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(
        tb.model_name, pretrained=str(tb.checkpoint)
    )
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(tb.model_name)


def random_crops(img: Image.Image, n: int, rng: np.random.Generator, scale=(0.5, 0.9)):
    """``n`` square crops of side ``s * min(H, W)``, ``s ~ U(scale)``, at uniform positions."""
    w, h = img.size
    out = []
    for _ in range(n):
        side = max(1, int(round(rng.uniform(*scale) * min(w, h))))
        x0 = int(rng.integers(0, w - side + 1))
        y0 = int(rng.integers(0, h - side + 1))
        out.append(img.crop((x0, y0, x0 + side, y0 + side)))
    return out


@torch.no_grad()
def encode_images(model, batch: torch.Tensor, bs: int = 512) -> torch.Tensor:
    """L2-normalised image embeddings ``(N, d)``."""
    return torch.cat(
        [model.encode_image(batch[i : i + bs], normalize=True) for i in range(0, len(batch), bs)]
    )


@torch.no_grad()
def encode_texts(model, tokenizer, texts: list[str]) -> torch.Tensor:
    """L2-normalised text embeddings ``(T, d)``."""
    return model.encode_text(tokenizer(texts), normalize=True)


def load_split(tb: Testbed, split: str) -> tuple[list[Image.Image], torch.Tensor]:
    """PIL images and labels of a task split."""
    recs = tb.task.split(split)
    images = [Image.open(tb.task.images_dir / r[0]).convert("RGB") for r in recs]
    return images, torch.tensor([r[1] for r in recs])


def class_prototypes(model, tokenizer, texts: dict[str, list[str]], classnames) -> torch.Tensor:
    """CuPL prototypes: normalised mean of each class's text embeddings ``(C, d)``."""
    protos = [encode_texts(model, tokenizer, texts[c]).mean(0) for c in classnames]
    return F.normalize(torch.stack(protos), dim=-1)


def wca_scores(
    glob: torch.Tensor,
    crops: torch.Tensor,
    desc: list[torch.Tensor],
    label: torch.Tensor,
    vis_temp: float = math.exp(4),
    txt_temp: float = math.exp(2),
) -> torch.Tensor:
    """WCA-style scores ``(N, C)``.

    glob (N, d), crops (N, V, d), desc[c] (M_c, d), label (C, d), all normalised. Crop weights
    softmax(vis_temp * cos(global, crop)) over V; description weights
    softmax(txt_temp * cos(desc, label prompt)) over M_c; score = cos(sum w v, sum u e).
    """
    w = torch.softmax(vis_temp * torch.einsum("nd,nvd->nv", glob, crops), dim=1)  # (N, V)
    img = F.normalize(torch.einsum("nv,nvd->nd", w, crops), dim=-1)  # (N, d)
    protos = []
    for c, e in enumerate(desc):
        u = torch.softmax(txt_temp * (e @ label[c]), dim=0)  # (M_c,)
        protos.append(F.normalize(u @ e, dim=-1))
    return img @ torch.stack(protos).T


def linear_probe(
    train_x: torch.Tensor, pseudo: torch.Tensor, test_x: torch.Tensor, n_classes: int, seed: int = 0
) -> torch.Tensor:
    """Probe (a): multinomial logistic regression on frozen features and pseudo-labels; returns
    test predictions. Full-batch L-BFGS with a small L2 penalty."""
    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(train_x.shape[1], n_classes)
    torch.nn.init.normal_(head.weight, std=0.01, generator=g)
    torch.nn.init.zeros_(head.bias)
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=200, history_size=20)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(train_x * 10), pseudo) + 1e-3 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return head(test_x * 10).argmax(1)


def _augment(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A "strong-ish" view that keeps the class: random square crop (scale 0.75-1) + flip.
    No colour jitter, because colour is a class attribute; no tighter crops, which would often
    cut the small class object out."""
    w, h = img.size
    side = int(round(rng.uniform(0.75, 1.0) * min(w, h)))
    x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    out = img.crop((x0, y0, x0 + side, y0 + side))
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out


def self_train_ln(
    model,
    preprocess,
    train_images: list[Image.Image],
    prototypes: torch.Tensor,
    epochs: int = 4,
    lr: float = 1e-3,
    batch_size: int = 64,
    seed: int = 0,
    keep: float = 0.5,
) -> None:
    """Probe (b): train only the visual LayerNorms on pseudo-labels (in place).

    Each batch: pseudo-labels = argmax of the current model on the plain view (no grad), loss =
    cross-entropy of the augmented view's logits (scale 100, as CLIP) against them, on the
    samples whose pseudo-label is among the ``keep`` most confident of its class in the
    zero-shot pass (confident pseudo-labels are much more often right).
    """
    names = [n for n, _ in model.named_parameters()]
    for n, p in model.named_parameters():
        p.requires_grad_(n.startswith("visual.") and (".ln_" in n or n.startswith("visual.ln_")))
    params = [p for p in model.parameters() if p.requires_grad]
    assert params, names
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    plain = torch.stack([preprocess(im) for im in train_images])
    model.eval()
    with torch.no_grad():
        probs = torch.softmax(100 * encode_images(model, plain) @ prototypes.T, dim=1)
    conf, label = probs.max(1)
    selected = []
    for c in range(len(prototypes)):
        members = torch.nonzero(label == c).flatten()
        k = max(1, int(keep * len(members))) if len(members) else 0
        selected += members[conf[members].argsort(descending=True)[:k]].tolist()
    selected = np.array(sorted(selected))
    steps = epochs * math.ceil(len(selected) / batch_size)
    step = 0
    for _ in range(epochs):
        order = selected[rng.permutation(len(selected))]
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            model.eval()
            with torch.no_grad():
                pseudo = (model.encode_image(plain[idx], normalize=True) @ prototypes.T).argmax(1)
            strong = torch.stack([preprocess(_augment(train_images[j], rng)) for j in idx])
            model.train()
            logits = 100 * model.encode_image(strong, normalize=True) @ prototypes.T
            loss = F.cross_entropy(logits, pseudo)
            for g in opt.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)


def calibrate(tb: Testbed, n_crops: int = 16, seed: int = 0, probe_b_epochs: int = 4) -> dict:
    """All calibration numbers (accuracies in %) for a built testbed."""
    torch.manual_seed(seed)
    model, preprocess, tokenizer = load_model(tb)
    classnames = tb.task.classnames
    descriptions = json.loads(tb.task.descriptions_json.read_text())
    templates = json.loads(tb.task.templates_json.read_text())
    test_images, test_y = load_split(tb, "test")
    train_images, train_y = load_split(tb, "train")

    def acc(pred):
        return round(100 * float((pred == test_y).float().mean()), 2)

    t0 = time.time()
    glob = encode_images(model, torch.stack([preprocess(im) for im in test_images]))
    rng = np.random.default_rng(seed)
    crops = torch.stack(
        [preprocess(c) for im in test_images for c in random_crops(im, n_crops, rng)]
    )
    crops = encode_images(model, crops).view(len(test_images), n_crops, -1)
    t_enc = time.time() - t0

    names = class_prototypes(
        model, tokenizer, {c: [t.format(c=c) for t in templates] for c in classnames}, classnames
    )
    cupl = class_prototypes(model, tokenizer, descriptions, classnames)
    desc = [encode_texts(model, tokenizer, descriptions[c]) for c in classnames]
    res = {
        "zs_names": acc((glob @ names.T).argmax(1)),
        "zs_descriptions": acc((glob @ cupl.T).argmax(1)),
        "wca": acc(wca_scores(glob, crops, desc, names).argmax(1)),
        "crops_mean_cupl": acc((F.normalize(crops.mean(1), dim=-1) @ cupl.T).argmax(1)),
    }

    train_x = encode_images(model, torch.stack([preprocess(im) for im in train_images]))
    pseudo = (train_x @ cupl.T).argmax(1)
    res["train_pseudo_label_acc"] = round(100 * float((pseudo == train_y).float().mean()), 2)
    res["probe_a_linear"] = acc(linear_probe(train_x, pseudo, glob, len(classnames), seed))

    t1 = time.time()
    self_train_ln(model, preprocess, train_images, cupl, epochs=probe_b_epochs, seed=seed)
    glob_b = encode_images(model, torch.stack([preprocess(im) for im in test_images]))
    res["probe_b_self_train_ln"] = acc((glob_b @ cupl.T).argmax(1))
    res["seconds"] = {"encode_test": round(t_enc, 1), "probe_b": round(time.time() - t1, 1)}
    return res


def main(argv=None) -> None:
    """Command line: build/reuse the testbed, print the calibration numbers as JSON."""
    p = argparse.ArgumentParser(
        prog="python -m labelless.testbed.calibrate", description=__doc__.split("\n")[0]
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="default: $LABELLESS_CACHE or ~/.cache/labelless",
    )
    p.add_argument("--n-crops", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probe-b-epochs", type=int, default=4)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args(argv)
    t0 = time.time()
    tb = ensure_testbed(args.cache_dir, progress=args.progress)
    build_s = time.time() - t0
    meta = json.loads((tb.checkpoint.parent / "model.json").read_text())
    res = calibrate(tb, n_crops=args.n_crops, seed=args.seed, probe_b_epochs=args.probe_b_epochs)
    res["build_seconds_this_call"] = round(build_s, 1)
    res["pretrain_log"] = {k: v for k, v in meta["log"].items() if k != "losses_every10"}
    res["checkpoint"] = str(tb.checkpoint)
    res["task"] = str(tb.task.root)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
