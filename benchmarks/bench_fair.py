"""Throughput of one FAIR training step (a script, not a test).

Measures images/s of a full step -- the no-grad pseudo-labelling forward of the weak view plus
N crops (one batched forward), the strong-view forward/backward and the AdamW update -- for
N in {4, 8, 16, 32} crops and top-k in {2, 4, 8}, on the tiny test architecture and on ViT-B/32
(random weights: the speed does not depend on them), and the memory of each setting: the
activations saved for backward (``saved MiB``, weights excluded, any device: what ``crop_grad``
adds) and, on CUDA,
the peak ``max_memory_allocated`` of the step (on CPU the process's peak RSS only grows, so it
cannot be compared across settings in one process and is not printed).

Every (N, k) is measured with ``crop_grad`` off (only the strong view trains) and on (the default:
the top-k crops enter the student loss with gradient), side by side.

    python benchmarks/bench_fair.py               # full grid (use a GPU for ViT-B/32)
    python benchmarks/bench_fair.py --quick       # small grid, few steps (CPU smoke run)
    python benchmarks/bench_fair.py --device cuda --batch-size 32 --amp
    python benchmarks/bench_fair.py --crop-grad off   # one setting only
    python benchmarks/bench_fair.py --archs vit-b-32 --ns 8 --ks 4 --batch-size 8 --steps 3
"""

from __future__ import annotations

import argparse
import time

import torch

from labelless.backbones import load_backbone
from labelless.methods.fair import FairConfig, FairTrainer
from labelless.tuners import build_tuner

ARCHS = {"tiny": "openclip:labelless-tiny:random", "vit-b-32": "openclip:ViT-B-32:random"}


def saved_for_backward_mb(fn, exclude: set[int] = frozenset()) -> tuple[object, float]:
    """Run ``fn()`` and return its result and the MiB of tensors autograd saved for backward
    (each storage counted once; storages whose data pointer is in ``exclude``, the weights, are
    not activations and are left out)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        st = t.untyped_storage()
        if st.data_ptr() not in exclude:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(seen.values()) / 2**20


def bench_one(backbone, n: int, k: int, batch: int, steps: int, warmup: int, amp: bool,
              crop_grad: bool = False) -> dict:
    device = backbone.device
    cfg = FairConfig(n_crops=n, k=k, crop_grad=crop_grad)
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

    def step(i):
        opt.zero_grad(set_to_none=True)
        trainer.training_step(step_batch, i)["loss"].backward()
        opt.step()

    for i in range(warmup):
        step(i)
    opt.zero_grad(set_to_none=True)
    weights = {p.untyped_storage().data_ptr() for p in backbone.model.parameters()}
    weights |= {p.untyped_storage().data_ptr() for _, p in trainer.named_trainable()}
    out, saved_mb = saved_for_backward_mb(lambda: trainer.training_step(step_batch, warmup)["loss"], weights)
    out.backward()
    del out
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return {"img_s": batch * steps / dt, "step_ms": 1000 * dt / steps, "saved_mb": saved_mb, "peak_mb": peak}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small grid and few steps")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=None, help="images per step (default 32; quick: 4)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--amp", action="store_true", help="optim.precision=bf16 (bfloat16 autocast)")
    ap.add_argument("--archs", nargs="*", default=list(ARCHS), choices=list(ARCHS))
    ap.add_argument("--crop-grad", choices=["off", "on", "both"], default="both",
                    help="FairConfig.crop_grad settings to measure (both: side by side)")
    ap.add_argument("--ns", type=int, nargs="*", default=None, help="crop counts N (overrides the grid)")
    ap.add_argument("--ks", type=int, nargs="*", default=None, help="top-k values (overrides the grid)")
    args = ap.parse_args(argv)
    ns, ks = ([4, 8], [2, 4]) if args.quick else ([4, 8, 16, 32], [2, 4, 8])
    ns, ks = args.ns or ns, args.ks or ks
    batch = args.batch_size or (4 if args.quick else 32)
    steps = args.steps or (2 if args.quick else 10)
    warmup = 1 if args.quick else 3
    settings = {"off": [False], "on": [True], "both": [False, True]}[args.crop_grad]
    print(f"device={args.device} batch={batch} steps={steps} amp={args.amp} torch={torch.__version__}")
    head = "".join(f" | crop_grad={'on' if cg else 'off':<3} {'img/s':>7} {'ms/step':>8} {'saved MiB':>9} {'peak MiB':>8}"
                   for cg in settings)
    print(f"{'arch':>9} {'N':>3} {'k':>3}{head}")
    for arch in args.archs:
        for n in ns:
            for k in ks:
                if k > n:
                    continue
                cells = []
                for cg in settings:
                    backbone = load_backbone(ARCHS[arch], device=args.device)
                    r = bench_one(backbone, n, k, batch, steps, warmup, args.amp, crop_grad=cg)
                    peak = "-" if r["peak_mb"] != r["peak_mb"] else f"{r['peak_mb']:.0f}"  # nan on CPU
                    cells.append(f" | {'':<13} {r['img_s']:>7.1f} {r['step_ms']:>8.1f} {r['saved_mb']:>9.1f} {peak:>8}")
                    del backbone
                print(f"{arch:>9} {n:>3} {k:>3}{''.join(cells)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
