"""Worker for tests/test_distributed.py: a few TrainLoop steps of a toy method.

Run under ``torchrun --nproc_per_node N`` (distributed) or plainly (one process). The toy loss
has a per-sample term and a batch-level term (a MUST-style fairness term on the gathered batch),
the two kinds of statistics the real methods have.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from labelless.engine import OptimConfig, TrainLoop
from labelless.engine.distributed import gather_cat, init_from_env, is_main


class ToyData(torch.utils.data.Dataset):
    def __init__(self, n: int = 48):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 6, generator=g)
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class ToyMethod:
    def __init__(self):
        torch.manual_seed(1)
        self.head = nn.Linear(6, 3)

    def named_trainable(self):
        return list(self.head.named_parameters())

    def training_step(self, batch, step):
        logits = self.head(batch["x"])  # (B, 3)
        ce = F.cross_entropy(logits, batch["y"])
        p_bar = gather_cat(logits.softmax(-1)).mean(0)  # (3,) over the global batch
        fair = -torch.log(p_bar).mean()
        return {"loss": ce + fair, "ce": ce, "fair": fair}


#: a few steps of each method with a batch-level statistic, on the tiny random model
METHOD_PARAMS = {
    "fair": {"n_crops": 2, "k": 1, "randaug_n": 0, "optim": {"lr": 1e-2, "min_lr": 0.0}},
    "flyp-pl": {"trainable": ["visual_ln", "text_ln"], "optim": {"lr": 1e-2, "warmup_steps": 0}},
    "latteclip": {"trainable": ["visual_ln", "text_ln"], "use_group": False, "optim": {"lr": 1e-2, "warmup_steps": 0}},
    # phase 1 runs past its warm-up epoch so the clean-sample gate is in play
    "coft+": {"n_ctx": 2, "vpt_tokens": 2, "rounds": 1, "moco_queue": 8, "warmup_epochs": 1,
              "phase1": {"epochs": 2}, "phase2": {"epochs": 1}, "optim": {}},
}


def method_main(method: str, out: str, batch_size: int, epochs: int, data: str) -> None:
    """A few steps of ``method`` (tiny random model, colour folder); its batch-level statistics
    (fairness mean, weight normalisation, contrastive negatives, prototype updates) must be
    gathered across ranks for the two launches to agree."""
    import json

    from labelless.backbones import load_backbone
    from labelless.config import from_dict
    from labelless.data import build_dataset
    from labelless.methods.base import FitContext, Runtime
    from labelless.registry import METHODS

    init_from_env("cpu")
    backbone = load_backbone("openclip:labelless-tiny:random")  # seeded: identical on every rank
    train = build_dataset(f"imagefolder:root={data}")
    names = list(train.classnames)
    texts = {c: [f"a photo of something {c}.", f"a {c} square."] for c in names}
    params = json.loads(json.dumps(METHOD_PARAMS[method]))
    if method.startswith("coft"):
        params.pop("optim")
        for phase in ("phase1", "phase2"):
            params[phase].update({"batch_size": batch_size})
    else:
        params["optim"].update({"epochs": epochs, "batch_size": batch_size})
    if method == "latteclip":
        captions = Path(out) / "captions.json"
        captions.parent.mkdir(parents=True, exist_ok=True)
        captions.write_text(json.dumps({p: [f"an image number {i}"] for i, p in enumerate(train.paths)}))
        params["captions"] = str(captions)
    cls = METHODS.get(method)
    ctx = FitContext(backbone=backbone, train=train, classnames=names, texts=texts, label_texts=texts,
                     rt=Runtime(device="cpu", progress=False, seed=0, cache_dir=None), out_dir=Path(out) / "run")
    m = cls(from_dict(cls.Config, params))
    fit = m.fit(ctx)
    if is_main():
        state = {**fit.tuned, **{f"classifier.{k}": v for k, v in fit.classifier.tensors().items()}}
        for p1 in getattr(m, "phase1_models", []):  # CoFT's phase-1 prompts, VPT tokens and head
            for part in ("prompts", "adapter", "head"):
                state.update({f"phase1.{part}.{k}": v for k, v in getattr(p1, part).state_dict().items()})
        torch.save({k: v.detach().clone() for k, v in state.items()}, Path(out) / "params.pt")


def features_main(out: str, data: str) -> None:
    """Crop-view features of a colour folder in shards of 4 images, cached under ``out``."""
    import torch.distributed as dist

    from labelless.backbones import load_backbone
    from labelless.data import build_dataset
    from labelless.data.features import extract_features
    from labelless.engine.distributed import world_size
    from labelless.views import build_view

    init_from_env("cpu")
    bb = load_backbone("openclip:labelless-tiny:random")
    ds = build_dataset(f"imagefolder:root={data}")
    feats = extract_features(bb, ds, build_view("crops", bb, n=2), seed=5, batch_size=3, shard_size=4,
                             cache_dir=Path(out) / "cache", progress=False)
    counts = [feats.meta["encoded_here"]]
    if world_size() > 1:
        counts = [None] * world_size()
        dist.all_gather_object(counts, feats.meta["encoded_here"])
    if is_main():
        torch.save({"embeds": feats.embeds, "counts": counts}, Path(out) / "features.pt")


def main(out: str, batch_size: int, steps_epochs: int) -> None:
    init_from_env("cpu")
    method = ToyMethod()
    cfg = OptimConfig(optimizer="sgd", lr=0.5, momentum=0.0, weight_decay=0.0,
                      epochs=steps_epochs, batch_size=batch_size)
    loop = TrainLoop(method, lambda epoch: ToyData(), cfg, Path(out) / "run", seed=3, progress=False)
    loop.run()
    if is_main():
        torch.save({k: v.detach() for k, v in method.head.state_dict().items()}, Path(out) / "params.pt")


if __name__ == "__main__":
    if sys.argv[1] == "features":
        features_main(sys.argv[2], sys.argv[3])
        sys.exit(0)
    if sys.argv[1] in METHOD_PARAMS:
        method_main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        sys.exit(0)
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
