"""Feature-extraction throughput: labelless vs the plain open_clip forward on the same work.

For each backbone and each view (``global``; ``crops`` with N crops) it reports, in images/s:

* ``encode``: the image encoder alone on pre-made tensors ``(B, V, 3, S, S)``, through
  labelless (:func:`labelless.data.features.encode_views`) and through the plain open_clip
  ``model.encode_image(x, normalize=True)`` on the very same tensors, interleaved and repeated
  (best of ``--repeats``), plus the ratio (target: labelless >= 0.9 x plain);
* ``data``: the data side alone (decode + view transform + collate, no model);
* ``end-to-end``: :func:`labelless.data.features.extract_features` without a cache;
* for ``crops`` also the data side of the per-crop preprocessing path (``before``: every crop
  through the backbone's torchvision pipeline) vs the fused fast path (``after``);
* peak memory (max RSS of the process so far; CUDA peak on a GPU).

Run: ``.venv/bin/python benchmarks/bench_features.py [--quick]``. Random weights are enough: the
speed does not depend on the values. Images are synthetic 64x64 JPEGs (EuroSAT's size) unless
``--data DIR`` points at a folder of images.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from labelless.backbones import load_backbone
from labelless.data import build_dataset
from labelless.data.features import ViewDataset, encode_views, extract_features
from labelless.views import build_view


def peak_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    if torch.cuda.is_available():
        return max(rss, torch.cuda.max_memory_allocated() / 2**20)
    return rss


def make_images(root: Path, n: int, size: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        base = rng.integers(0, 256, 3)
        arr = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(root / f"img_{i:05d}.jpg", quality=90)
    return root


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_data(ds, view, batch_size, workers, seed=0):
    """Seconds for the data side alone, and the batches it produced."""
    vd = ViewDataset(ds, {"v": view}, seed=seed)
    t0 = time.perf_counter()
    batches = [b["views"]["v"] for b in DataLoader(vd, batch_size=batch_size, num_workers=workers)]
    return time.perf_counter() - t0, batches


@torch.no_grad()
def time_encode(backbone, batches, repeats):
    """Best-of-``repeats`` seconds of labelless encode_views and of the plain forward."""
    model, device = backbone.model, backbone.device
    batches = [b.to(device) for b in batches]
    encode_views(backbone, batches[0][:1])  # warm-up
    model.encode_image(batches[0][:1].flatten(0, 1), normalize=True)
    ours, plain = [], []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for b in batches:
            emb, _ = encode_views(backbone, b)
        sync(device)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for b in batches:
            ref = model.encode_image(b.flatten(0, 1), normalize=True).reshape(b.shape[0], b.shape[1], -1)
        sync(device)
        plain.append(time.perf_counter() - t0)
        # same work, same result
        assert torch.allclose(emb, ref, atol=1e-5)
    return min(ours), min(plain)


def bench(spec, ds, view_name, view_opts, batch_size, workers, repeats, device):
    backbone = load_backbone(spec, device=device)
    view = build_view(view_name, backbone, **view_opts)
    n = len(ds)
    rows = {}
    t_data, batches = time_data(ds, view, batch_size, workers)
    rows["data"] = n / t_data
    if view_name == "crops":
        fast = view._fast
        view._fast = None  # the per-crop torchvision pipeline (the path before the fast one)
        t_before, _ = time_data(ds, view, batch_size, workers)
        view._fast = fast
        rows["data_before"] = n / t_before
    t_ours, t_plain = time_encode(backbone, batches, repeats)
    rows["encode_labelless"] = n / t_ours
    rows["encode_plain"] = n / t_plain
    t0 = time.perf_counter()
    feats = extract_features(backbone, ds, view, batch_size=batch_size, num_workers=workers,
                             cache_dir=None, progress=False)
    sync(device)
    rows["end_to_end"] = n / (time.perf_counter() - t0)
    assert feats.embeds.shape[:2] == (n, view.num_views)
    rows["peak_mb"] = peak_mb()
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="few images, one repeat (a smoke run)")
    p.add_argument("--models", nargs="+",
                   default=["openclip:labelless-tiny:random", "openclip:ViT-B-32:random"])
    p.add_argument("--data", help="a folder of images (default: synthetic 64x64 JPEGs)")
    p.add_argument("--crops", type=int, default=8)
    p.add_argument("--n-small", type=int, default=512, help="images for tiny models")
    p.add_argument("--n-big", type=int, default=32, help="images for other models")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        n_small = 64 if args.quick else args.n_small
        n_big = 8 if args.quick else args.n_big
        root = Path(args.data) if args.data else make_images(Path(tmp) / "imgs", n_small)
        base = build_dataset(f"folder:root={root}", classes=["x"])
        print(f"device={args.device} threads={torch.get_num_threads()} torch={torch.__version__} "
              f"batch={args.batch_size} workers={args.workers} repeats={repeats}")
        print(f"{'model':34} {'view':8} {'N':>5} {'data':>8} {'data_old':>8} {'enc_ll':>8} "
              f"{'enc_oc':>8} {'ratio':>6} {'e2e':>8} {'peakMB':>7}   (images/s)")
        for spec in args.models:
            small = "tiny" in spec
            n = min(len(base), n_small if small else n_big)
            ds = base.subset(range(n))
            for view_name, opts in (("global", {}), ("crops", {"n": args.crops})):
                if view_name == "crops" and not small:
                    ds = ds.subset(range(max(1, n // 2)))  # crops cost n x the forwards
                r = bench(spec, ds, view_name, opts, args.batch_size, args.workers, repeats, args.device)
                ratio = r["encode_labelless"] / r["encode_plain"]
                vname = view_name if view_name == "global" else f"crops{args.crops}"
                print(f"{spec:34} {vname:8} {len(ds):5d} {r['data']:8.1f} {r.get('data_before', float('nan')):8.1f} "
                      f"{r['encode_labelless']:8.1f} {r['encode_plain']:8.1f} {ratio:6.3f} "
                      f"{r['end_to_end']:8.1f} {r['peak_mb']:7.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
