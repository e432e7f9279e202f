"""Pre-train the tiny CLIP of the testbed on generated image-caption pairs, on the CPU.

The architecture is an ordinary open_clip model config (``labelless-testbed.json`` in
``labelless/backbones/model_configs``), trained with open_clip's own ``ClipLoss`` and saved as a
plain open_clip checkpoint (``{"state_dict": ...}``), so the rest of the toolkit loads it exactly
like any other CLIP: ``open_clip.create_model_and_transforms("labelless-testbed",
pretrained=path)`` or the backbone spec ``openclip:labelless-testbed:<path>``.

Training is seeded and deterministic on the CPU (fixed thread count, deterministic algorithms),
and cached under the hash of its configuration (:func:`ensure_pretrained`).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from labelless.config import to_dict
from labelless.errors import ConfigError
from labelless.testbed.cache import CODE_VERSION, config_hash, default_cache_dir, publish_dir
from labelless.testbed.world import WorldConfig, sample_pairs

MODEL_NAME = "labelless-testbed"
#: Folder of the toolkit's own open_clip model configs.
MODEL_CONFIG_DIR = Path(__file__).resolve().parent.parent / "backbones" / "model_configs"


def register_model_configs() -> None:
    """Make ``labelless-testbed`` known to open_clip (idempotent: rescanning is harmless)."""
    import open_clip

    if MODEL_NAME not in open_clip.list_models():
        open_clip.add_model_config(MODEL_CONFIG_DIR)


@dataclass
class PretrainConfig:
    """Pre-training of the testbed CLIP (every field is part of the checkpoint's cache key)."""

    world: WorldConfig = field(default_factory=WorldConfig)
    """Pre-training domain: big objects, few distractors, plain/gradient/noise backgrounds."""
    model: str = MODEL_NAME
    """open_clip model config name; its JSON is part of the cache key too."""
    n_pairs: int = 60000
    """Distinct image-caption pairs generated (stream 0 of the world)."""
    steps: int = 450
    """Optimiser steps."""
    batch_size: int = 256
    """Pairs per step (the contrastive batch)."""
    lr: float = 2e-3
    """Peak learning rate of AdamW (after linear warm-up, then cosine decay to 0)."""
    warmup_steps: int = 30
    """Linear warm-up steps."""
    weight_decay: float = 0.1
    """AdamW weight decay, applied to matrices only (not to biases, norms, logit scale)."""
    seed: int = 0
    """Seeds the model initialisation and the batch order."""
    num_threads: int = 2
    """torch CPU threads during training; fixed because CPU results depend on it."""
    deterministic_algorithms: bool = False
    """Also call ``torch.use_deterministic_algorithms(True)``. Off by default: with a fixed
    thread count the CPU kernels used here are already bitwise reproducible (tested), and the
    flag roughly doubled the step time when measured."""
    n_eval: int = 500
    """Held-out pairs (stream 1) for the retrieval accuracy reported in the training log."""

    def __post_init__(self) -> None:
        if isinstance(self.world, dict):
            self.world = WorldConfig(**self.world)
        for name in ("n_pairs", "steps", "batch_size", "num_threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"PretrainConfig.{name}: must be >= 1")
        if self.batch_size > self.n_pairs:
            raise ConfigError("PretrainConfig.batch_size: larger than n_pairs")


def model_config_json(name: str = MODEL_NAME) -> dict:
    """The open_clip config dict of ``name`` (after registering the toolkit's configs)."""
    import open_clip

    register_model_configs()
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ConfigError(f"unknown open_clip model config {name!r}")
    return cfg


def pretrain_hash(cfg: PretrainConfig) -> str:
    """Cache key of a checkpoint: the pre-training config, the model JSON and the code version."""
    return config_hash(cfg, model_config_json(cfg.model))


@contextlib.contextmanager
def _deterministic(num_threads: int, algorithms: bool):
    """Fixed threads (+ optionally deterministic kernels) for the duration, then restored."""
    threads = torch.get_num_threads()
    det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(algorithms or det)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)


def images_to_tensor(images: np.ndarray, mean, std) -> torch.Tensor:
    """``(N, S, S, 3)`` uint8 -> normalised ``(N, 3, S, S)`` float, as open_clip's ToTensor +
    Normalize would do (the pre-training images already have the model's input size)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s


def _optimizer(model: torch.nn.Module, cfg: PretrainConfig) -> torch.optim.Optimizer:
    # nanoGPT-style groups: decay matrices/embeddings, not biases, norms or the logit scale.
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )


@torch.no_grad()
def retrieval_accuracy(model, images: torch.Tensor, tokens: torch.Tensor) -> dict[str, float]:
    """Top-1 image->text and text->image retrieval accuracy within a held-out batch."""
    model.eval()
    img = model.encode_image(images, normalize=True)
    txt = model.encode_text(tokens, normalize=True)
    sim = img @ txt.T
    target = torch.arange(len(sim))
    return {
        "i2t": float((sim.argmax(1) == target).float().mean()),
        "t2i": float((sim.argmax(0) == target).float().mean()),
    }


def pretrain(cfg: PretrainConfig | None = None, progress: bool = True):
    """Pre-train a fresh ``cfg.model`` and return ``(model, log)``.

    ``log`` holds the losses, retrieval accuracy on held-out pairs, wall times and the config.
    """
    import open_clip
    from open_clip.loss import ClipLoss
    from tqdm.auto import tqdm

    cfg = cfg or PretrainConfig()
    register_model_configs()
    t0 = time.time()
    with _deterministic(cfg.num_threads, cfg.deterministic_algorithms):
        torch.manual_seed(cfg.seed)
        model = open_clip.create_model(cfg.model, pretrained=None, output_dict=True)
        if model.visual.image_size[0] != cfg.world.image_size:
            raise ConfigError(
                f"PretrainConfig.world.image_size={cfg.world.image_size} must equal the model's "
                f"input size {model.visual.image_size[0]}"
            )
        pp = open_clip.get_model_preprocess_cfg(model)
        tokenizer = open_clip.get_tokenizer(cfg.model)

        # Generate the pairs in chunks so the progress bar moves.
        chunk = 2000
        parts, caps = [], []
        for start in tqdm(
            range(0, cfg.n_pairs, chunk), desc="testbed pairs", disable=not progress, leave=False
        ):
            ims, cs = sample_pairs(cfg.world, min(chunk, cfg.n_pairs - start), 0, start)
            parts.append(ims)
            caps += cs
        images = images_to_tensor(np.concatenate(parts), pp["mean"], pp["std"])
        tokens = tokenizer(caps)
        ev_ims, ev_caps = sample_pairs(cfg.world, cfg.n_eval, stream=1)
        ev_images = images_to_tensor(ev_ims, pp["mean"], pp["std"])
        ev_tokens = tokenizer(ev_caps)
        t_data = time.time() - t0

        loss_fn = ClipLoss()
        opt = _optimizer(model, cfg)
        gen = torch.Generator().manual_seed(cfg.seed)
        order = torch.randperm(cfg.n_pairs, generator=gen)
        pos = 0
        losses = []
        model.train()
        bar = tqdm(range(cfg.steps), desc="testbed pretrain", disable=not progress, leave=False)
        for step in bar:
            lr = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
            if step >= cfg.warmup_steps:
                frac = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
                lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * frac))
            for g in opt.param_groups:
                g["lr"] = lr
            if pos + cfg.batch_size > cfg.n_pairs:
                order = torch.randperm(cfg.n_pairs, generator=gen)
                pos = 0
            idx = order[pos : pos + cfg.batch_size]
            pos += cfg.batch_size
            out = model(images[idx], tokens[idx])
            loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                # As in CLIP: keep the temperature from exceeding 100.
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(float(loss.detach()))
            if step % 10 == 0:
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
        model.eval()
        retrieval = retrieval_accuracy(model, ev_images, ev_tokens)
    log = {
        "loss_first": losses[0],
        "loss_last10": float(np.mean(losses[-10:])),
        "losses_every10": losses[::10],
        "heldout_retrieval": retrieval,
        "logit_scale": float(model.logit_scale.detach().exp()),
        "data_seconds": round(t_data, 2),
        "total_seconds": round(time.time() - t0, 2),
    }
    return model, log


def save_checkpoint(model: torch.nn.Module, path: Path) -> None:
    """Save ``{"state_dict": ...}``, the format open_clip's ``load_checkpoint`` reads."""
    torch.save({"state_dict": model.state_dict()}, path)


def ensure_pretrained(
    cfg: PretrainConfig | None = None, cache_dir: Path | str | None = None, progress: bool = True
) -> Path:
    """Path of the checkpoint for ``cfg``, pre-training (once per config hash) if missing.

    Layout: ``<cache_dir>/testbed/<hash>/model.pt`` plus ``model.json`` (config, hash, model
    JSON, training log). Written to a temporary folder and renamed into place.
    """
    cfg = cfg or PretrainConfig()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    h = pretrain_hash(cfg)
    final = cache_dir / "testbed" / h

    def build(tmp: Path) -> None:
        model, log = pretrain(cfg, progress=progress)
        save_checkpoint(model, tmp / "model.pt")
        meta = {
            "hash": h,
            "code_version": CODE_VERSION,
            "model": cfg.model,
            "model_config": model_config_json(cfg.model),
            "config": to_dict(cfg),
            "log": log,
            "torch": torch.__version__,
        }
        (tmp / "model.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    publish_dir(final, build)
    return final / "model.pt"
