"""Throughput of one FAIR training step (a script, not a test).

Measures images/s of a full step -- the no-grad pseudo-labelling forward of the weak view plus
N crops (one batched forward), the strong-view forward/backward and the AdamW update -- for
N in {4, 8, 16, 32} crops and top-k in {2, 4, 8}, on the tiny test architecture and on ViT-B/32
(random weights: the speed does not depend on them), and the peak memory of each setting
(CUDA: ``max_memory_allocated``; CPU: the process's peak RSS so far, which only grows).

    python benchmarks/bench_fair.py               # full grid (use a GPU for ViT-B/32)
    python benchmarks/bench_fair.py --quick       # small grid, few steps (CPU smoke run)
    python benchmarks/bench_fair.py --device cuda --batch-size 32 --amp
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

from labelless.backbones import load_backbone
from labelless.methods.fair import FairConfig, FairTrainer
from labelless.tuners import build_tuner

ARCHS = {"tiny": "openclip:labelless-tiny:random", "vit-b-32": "openclip:ViT-B-32:random"}


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def bench_one(backbone, n: int, k: int, batch: int, steps: int, warmup: int, amp: bool) -> dict:
    device = backbone.device
    cfg = FairConfig(n_crops=n, k=k)
    cfg.optim.precision = "bf16" if amp else "fp32"  # the run's one precision setting
    for p in backbone.model.parameters():
        p.requires_grad_(False)
    tuner = build_tuner(backbone, "layernorm")
    c, d, s = 10, backbone.embed_dim, backbone.image_size
    g = torch.Generator().manual_seed(0)
    anchors = torch.randn(c, d, generator=g)
    trainer = FairTrainer(backbone, tuner, anchors, cfg, [f"c{i}" for i in range(c)])
    opt = torch.optim.AdamW([p for _, p in trainer.named_trainable()], lr=1e-5)
    views = {
        "weak": torch.randn(batch, 1, 3, s, s, generator=g),
        "crops": torch.randn(batch, n, 3, s, s, generator=g),
        "strong": torch.randn(batch, 1, 3, s, s, generator=g),
    }
    step_batch = {"views": views, "label": torch.full((batch,), -1, dtype=torch.long)}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step(i):
        opt.zero_grad(set_to_none=True)
        trainer.training_step(step_batch, i)["loss"].backward()
        opt.step()

    for i in range(warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t0
    return {"img_s": batch * steps / dt, "step_ms": 1000 * dt / steps, "peak_mb": peak_memory_mb(device)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small grid and few steps")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=None, help="images per step (default 32; quick: 4)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--amp", action="store_true", help="optim.precision=bf16 (bfloat16 autocast)")
    ap.add_argument("--archs", nargs="*", default=list(ARCHS), choices=list(ARCHS))
    args = ap.parse_args(argv)
    ns, ks = ([4, 8], [2, 4]) if args.quick else ([4, 8, 16, 32], [2, 4, 8])
    batch = args.batch_size or (4 if args.quick else 32)
    steps = args.steps or (2 if args.quick else 10)
    warmup = 1 if args.quick else 3
    print(f"device={args.device} batch={batch} steps={steps} amp={args.amp} torch={torch.__version__}")
    print(f"{'arch':>9} {'N':>3} {'k':>3} {'img/s':>9} {'ms/step':>9} {'peak MiB':>9}")
    for arch in args.archs:
        for n in ns:
            for k in ks:
                if k > n:
                    continue
                backbone = load_backbone(ARCHS[arch], device=args.device)
                r = bench_one(backbone, n, k, batch, steps, warmup, args.amp)
                print(f"{arch:>9} {n:>3} {k:>3} {r['img_s']:>9.1f} {r['step_ms']:>9.1f} {r['peak_mb']:>9.0f}", flush=True)
                del backbone
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
