"""Peak memory of zero-shot prediction over an unlabeled folder, against the folder's size.

The data path streams: the folder is listed (paths only), images are decoded batch by batch in
the DataLoader, embeddings go to the sharded on-disk feature cache, and what stays in memory per
image is its path, its embedding ``(d,)`` and its class probabilities ``(C,)``. This script
measures that: it writes one folder of synthetic 64x64 JPEGs (EuroSAT's size), then for each size
N runs, in a fresh process, ``folder:root=DIR,limit=N`` -> global-view features (with the cache)
-> zero-shot probabilities, and prints the process's peak RSS, the extraction time and the slope
(bytes of peak memory per extra image).

Run: ``.venv/bin/python benchmarks/bench_stream_memory.py [--sizes 1000,10000,100000]
[--dir DIR] [--model SPEC]``. The default model is the tiny random open_clip config (speed and
memory of the data path do not depend on the weights).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

CHILD = r"""
import json, resource, sys, time, torch
from labelless.backbones import load_backbone
from labelless.data import build_dataset
from labelless.data.features import extract_features
from labelless.methods.zeroshot import encode_texts
from labelless.views import build_view
root, n, model, cache = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
classes = [f"class {k}" for k in range(10)]
bb = load_backbone(model)
t0 = time.time()
ds = build_dataset(f"folder:root={root},limit={n}", classes=classes)
feats = extract_features(bb, ds, build_view("global", bb), batch_size=256, cache_dir=cache, progress=False)
with torch.no_grad():
    text = encode_texts(bb, {c: [f"a photo of a {c}."] for c in classes}).mean_embeddings()
    probs = (100 * feats.embeds[:, 0].float() @ text.float().T).softmax(-1)
dt = time.time() - t0
print(json.dumps({"n": len(ds), "seconds": dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "embed_dim": int(feats.embeds.shape[-1]), "probs": list(probs.shape)}))
"""


def write_folder(root: Path, n: int, size: int = 64) -> None:
    """``n`` synthetic JPEGs under ``root`` (in sub-folders of 1,000), reusing what exists."""
    rng = np.random.default_rng(0)
    have = len(list(root.rglob("*.jpg"))) if root.exists() else 0
    for i in range(have, n):
        d = root / f"part{i // 1000:04d}"
        d.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(arr).save(d / f"img{i:07d}.jpg", quality=85)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,5000,20000", help="comma-separated folder sizes")
    ap.add_argument("--dir", help="folder for the synthetic images (default: a temp dir)")
    ap.add_argument("--model", default="openclip:labelless-tiny:random")
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.dir) if args.dir else Path(tmp) / "images"
        t0 = time.time()
        write_folder(root, sizes[-1])
        print(f"folder: {root} ({sizes[-1]} images, written in {time.time() - t0:.0f}s)")
        rows = []
        for n in sizes:
            cache = Path(tmp) / f"cache{n}"
            out = subprocess.run([sys.executable, "-c", CHILD, str(root), str(n), args.model, str(cache)],
                                 check=True, capture_output=True, text=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"\n{'images':>8} {'peak RSS (MB)':>14} {'seconds':>8} {'img/s':>8}")
        for r in rows:
            print(f"{r['n']:>8} {r['peak_rss_mb']:>14.0f} {r['seconds']:>8.1f} {r['n'] / r['seconds']:>8.0f}")
        if len(rows) > 1:
            slope = (rows[-1]["peak_rss_mb"] - rows[0]["peak_rss_mb"]) * 2**20 / (rows[-1]["n"] - rows[0]["n"])
            print(f"\npeak memory grows {slope:.0f} bytes per extra image (embedding dim "
                  f"{rows[-1]['embed_dim']}: {4 * rows[-1]['embed_dim']} bytes of float32 features each)")


if __name__ == "__main__":
    main()
