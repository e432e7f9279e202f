"""The input side per CPU core, PIL views vs views made on the device, and the model side.

One process prints, side by side for ``--views-on cpu`` (PIL in the loader) and ``device``
(the loader decodes and resizes once, the views are cut batched on the device,
:mod:`labelless.views.device`):

1. **input pipeline** per workload -- FAIR's views (centre + 8 crops + strong), WCA's
   (centre + 32 crops), LaTTe-CLIP's training view: images/s of the DataLoader alone with 1
   and 2 workers, and per core (= images/s / workers). For ``device`` that is all the CPU does;
   the ``views`` column is the device-side work (cutting the views), measured here on CPU
   tensors in the main process (one thread): on a GPU it leaves the CPU.
2. **end-to-end on the CPU** (``--e2e-model``, loader with 0 workers, one process): FAIR
   training steps, WCA's feature extraction (global + 32 crops) and LaTTe-CLIP's training
   view through the image encoder, in images/s, per path.
3. **model side** (ViT-B/32 by default): labelless's multi-view encode vs the plain open_clip
   ``encode_image`` on the same tensors, and one FAIR step (N=8 crops, top-4) vs its floor (a
   no-grad plain forward of the 1+8 pseudo-label views plus a LayerNorm-only forward+backward
   and AdamW step of the strong view).
4. with ``--data DIR``: the mean cosine between the two paths' features of the same images
   (same seed, so the same boxes; only the interpolation differs) for the tiny and the
   ViT-B/32 model.

Random weights are enough (speed does not depend on them; the cosine compares two ways of
making the same views). Images are synthetic 64x64 JPEGs (EuroSAT's size) unless ``--data``.

    python benchmarks/bench_views.py --quick          # a smoke run
    python benchmarks/bench_views.py --data DIR       # the README's figures (DIR: EuroSAT)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_features import make_images, time_encode  # noqa: E402

from labelless.backbones import load_backbone  # noqa: E402
from labelless.data import build_dataset  # noqa: E402
from labelless.data.features import ViewDataset, extract_features  # noqa: E402
from labelless.methods.fair import FairConfig, FairTrainer, fair_views  # noqa: E402
from labelless.methods.latteclip import ResizedCropView  # noqa: E402
from labelless.tuners import build_tuner  # noqa: E402
from labelless.views import build_view  # noqa: E402
from labelless.views.device import DecodedDataset, device_view, make_views  # noqa: E402

TINY = "openclip:labelless-tiny:random"
VITB = "openclip:ViT-B-32:random"


def workloads(bb) -> dict[str, dict]:
    """The views each method's loader makes, as the methods build them."""
    return {
        "fair (1+8+1)": fair_views(bb, FairConfig()),
        "wca (1+32)": {"g": build_view("global", bb), "crops": build_view("crops", bb, n=32)},
        "latte rrc": {"train": ResizedCropView(bb, (0.9, 1.0))},
    }


def core_rate(ds, batch: int, collate=None) -> float:
    """Images/s of one core doing the loader's work (items + collate, in this process): the
    CPU time per image of the input pipeline, without inter-process overhead."""
    collate = collate or torch.utils.data.default_collate
    ds[0]  # warm-up
    t0 = time.perf_counter()
    for s in range(0, len(ds), batch):
        collate([ds[i] for i in range(s, min(len(ds), s + batch))])
    return len(ds) / (time.perf_counter() - t0)


def loader_rate(ds, batch: int, workers: int, collate=None) -> float:
    """Images/s of a DataLoader with ``workers`` processes, start-up included."""
    t0 = time.perf_counter()
    m = sum(len(b["index"]) for b in DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=collate))
    return m / (time.perf_counter() - t0)


def render_rate(ds, dviews, batch: int) -> float:
    """Images/s of cutting the views from decoded batches (main process, no workers)."""
    batches = list(DataLoader(ds, batch_size=batch, collate_fn=DecodedDataset.collate_fn))
    make_views(batches[0], dviews, "cpu")
    t0 = time.perf_counter()
    for b in batches:
        make_views(b, dviews, "cpu")
    return sum(len(b["index"]) for b in batches) / (time.perf_counter() - t0)


def input_side(ds, batch: int, worker_counts) -> None:
    bb = load_backbone(VITB, device="cpu")  # 224 px views, as the paper-sized runs make them
    print(f"\n1. input pipeline, {len(ds)} images -> {bb.image_size} px views, images/s. 'core': one "
          "core doing the loader's work in-process (= 1 / CPU time per image); 'wN': a DataLoader "
          "with N workers, start-up included; 'views': the device-side work of the device path, "
          "here on one CPU thread")
    head = " ".join(f"{'core':>7} " + " ".join(f"{'w' + str(w):>7}" for w in worker_counts) for _ in range(2))
    print(f"{'':14} {'cpu (PIL)':^{8 * (1 + len(worker_counts))}}{'device (loader)':^{8 * (1 + len(worker_counts))}}")
    print(f"{'workload':14} {head} {'views':>7} {'x/core':>7}")
    for name, views in workloads(bb).items():
        dviews = {k: device_view(v, bb) for k, v in views.items()}
        cells, core = [], {}
        for path in ("cpu", "device"):
            if path == "cpu":
                data, collate = ViewDataset(ds, views), None
            else:
                data, collate = DecodedDataset(ds, dviews), DecodedDataset.collate_fn
            core[path] = core_rate(data, batch, collate)
            cells.append(f"{core[path]:7.0f}")
            cells += [f"{loader_rate(data, batch, w, collate):7.0f}" for w in worker_counts]
        rv = render_rate(DecodedDataset(ds, dviews), dviews, batch)
        print(f"{name:14} " + " ".join(cells) + f" {rv:7.0f} {core['device'] / core['cpu']:7.1f}", flush=True)


def fair_step_rate(bb, ds, views_on: str, batch: int, n_steps: int) -> float:
    """Images/s of FAIR training steps fed by the loader (0 workers: one process)."""
    cfg = FairConfig()
    for p in bb.model.parameters():
        p.requires_grad_(False)
    tuner = build_tuner(bb, "layernorm")
    c = 10
    trainer = FairTrainer(bb, tuner, torch.randn(c, bb.embed_dim, generator=torch.Generator().manual_seed(0)),
                          cfg, [f"c{i}" for i in range(c)])
    views = fair_views(bb, cfg)
    if views_on == "device":
        trainer.device_views = {k: device_view(v, bb) for k, v in views.items()}
        data, collate = DecodedDataset(ds, trainer.device_views), DecodedDataset.collate_fn
    else:
        data, collate = ViewDataset(ds, views), None
    opt = torch.optim.AdamW([p for _, p in trainer.named_trainable()], lr=1e-5)
    n_steps = min(n_steps, len(data) // batch - 1)
    loader = iter(DataLoader(data, batch_size=batch, collate_fn=collate))

    def step(b, i):
        opt.zero_grad(set_to_none=True)
        trainer.training_step(b, i)["loss"].backward()
        opt.step()

    step(next(loader), 0)  # warm-up
    t0, m = time.perf_counter(), 0
    for i in range(n_steps):
        b = next(loader)
        step(b, i)
        m += len(b["index"])
    return m / (time.perf_counter() - t0)


def end_to_end(spec: str, ds, batch: int, fair_steps: int) -> None:
    bb = load_backbone(spec, device="cpu")
    print(f"\n2. end-to-end on the CPU, {spec} ({bb.image_size} px), loader with 0 workers (images/s)")
    print(f"{'workload':14} {'cpu':>8} {'device':>8} {'ratio':>6}")
    rows = {}
    for path in ("cpu", "device"):
        rows.setdefault("fair step b8", {})[path] = fair_step_rate(bb, ds, path, 8, fair_steps)
    for name, view in (("wca crops32", build_view("crops", bb, n=32)),
                       ("latte rrc fwd", ResizedCropView(bb, (0.9, 1.0)))):
        for path in ("cpu", "device"):
            extract_features(bb, ds.subset(range(min(len(ds), batch))), view, batch_size=batch,
                             progress=False, views_on=path)  # warm-up
            t0 = time.perf_counter()
            extract_features(bb, ds, view, batch_size=batch, progress=False, views_on=path)
            rows.setdefault(name, {})[path] = len(ds) / (time.perf_counter() - t0)
    for name, r in rows.items():
        print(f"{name:14} {r['cpu']:8.1f} {r['device']:8.1f} {r['device'] / r['cpu']:6.2f}", flush=True)


def model_side(spec: str, batch: int, repeats: int) -> None:
    """The encode ratio and the FAIR-step-vs-floor ratio, on pre-made tensors."""
    bb = load_backbone(spec, device="cpu")
    s, n, g = bb.image_size, 8, torch.Generator().manual_seed(0)
    views = torch.randn(batch, 1 + n, 3, s, s, generator=g)
    t_ours, t_plain = time_encode(bb, [views], repeats)
    print(f"\n3. model side, {spec}, batch {batch}, CPU")
    print(f"multi-view encode (1+{n} views): labelless {batch / t_ours:.1f} img/s, plain open_clip "
          f"{batch / t_plain:.1f} img/s, ratio (time) {t_ours / t_plain:.3f}x")

    cfg = FairConfig(n_crops=n, k=4)
    for p in bb.model.parameters():
        p.requires_grad_(False)
    tuner = build_tuner(bb, "layernorm")
    c = 10
    trainer = FairTrainer(bb, tuner, torch.randn(c, bb.embed_dim, generator=g), cfg, [f"c{i}" for i in range(c)])
    opt = torch.optim.AdamW([p for _, p in trainer.named_trainable()], lr=1e-5)
    strong = torch.randn(batch, 1, 3, s, s, generator=g)
    step_batch = {"views": {"weak": views[:, :1], "crops": views[:, 1:], "strong": strong},
                  "label": torch.full((batch,), -1)}
    model = bb.model
    ln = [p for m in model.visual.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()]
    opt_floor = torch.optim.AdamW(ln, lr=1e-5)

    def fair():
        opt.zero_grad(set_to_none=True)
        trainer.training_step(step_batch, 0)["loss"].backward()
        opt.step()

    def floor():
        opt_floor.zero_grad(set_to_none=True)
        with torch.no_grad():
            model.encode_image(views.flatten(0, 1))
        model.encode_image(strong[:, 0]).float().pow(2).mean().backward()
        opt_floor.step()

    fair()
    floor()
    t_f, t_0 = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fair()
        t_f.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        floor()
        t_0.append(time.perf_counter() - t0)
    print(f"FAIR step (N={n}, top-4): {1000 * min(t_f):.0f} ms, floor {1000 * min(t_0):.0f} ms, "
          f"ratio {min(t_f) / min(t_0):.3f}x", flush=True)


@torch.no_grad()
def cosines(ds, specs, batch: int) -> None:
    print(f"\n4. feature agreement on {len(ds)} images: mean cosine between the two paths' features "
          "of the same image and seed (in brackets, for scale: between different images, PIL path)")
    for spec in specs:
        bb = load_backbone(spec, device="cpu")
        views = {"global": build_view("global", bb), "crops8": build_view("crops", bb, n=8),
                 "strong": build_view("strong", bb), "latte rrc": ResizedCropView(bb, (0.9, 1.0))}
        parts = []
        for name, view in views.items():
            a = extract_features(bb, ds, view, batch_size=batch, progress=False, views_on="cpu").embeds
            b = extract_features(bb, ds, view, batch_size=batch, progress=False, views_on="device").embeds
            same = float((a * b).sum(-1).mean())
            other = float((a * a.roll(1, dims=0)).sum(-1).mean())  # scale: another image, same path
            parts.append(f"{name} {same:.5f} ({other:.5f})")
        print(f"{spec:34} " + "  ".join(parts), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few images and repeats (a smoke run)")
    p.add_argument("--data", help="a folder of images (e.g. EuroSAT; default synthetic 64x64 JPEGs)")
    p.add_argument("--n", type=int, default=512, help="images for the input-side figures")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--e2e-model", default=TINY)
    p.add_argument("--model-side", default=VITB, help="backbone of the model-side ratios")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip", nargs="*", default=[], choices=["input", "e2e", "model", "cosine"])
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # per-core figures; the loader's parallelism is its workers
    n = 64 if args.quick else args.n
    repeats = 1 if args.quick else args.repeats
    print(f"torch={torch.__version__} threads={torch.get_num_threads()} batch={args.batch_size} "
          f"images={'synthetic 64x64' if not args.data else 'folder'}; GPU: not measured here")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else make_images(Path(tmp) / "imgs", n)
        base = build_dataset(f"folder:root={root}", classes=["x"]) if not args.data else \
            build_dataset(f"imagefolder:root={root}")
        ds = base.subset(torch.randperm(len(base), generator=torch.Generator().manual_seed(0))[:n].sort().values.tolist())
        if "input" not in args.skip:
            input_side(ds, args.batch_size, args.workers)
        if "e2e" not in args.skip:
            end_to_end(args.e2e_model, ds, args.batch_size, fair_steps=2 if args.quick else 6)
        if "model" not in args.skip:
            model_side(args.model_side, 8, repeats)
        if "cosine" not in args.skip and args.data:
            cosines(ds.subset(range(min(len(ds), 16 if args.quick else 64))), [TINY, VITB], args.batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
