"""Batched multi-view feature extraction with a resumable on-disk cache.

All views of a batch of images go through the image encoder in one forward: a loader batch of
shape ``(B, V, 3, S, S)`` is flattened to ``(B*V, 3, S, S)`` (no per-crop Python loop), and the
result reshaped back to ``(B, V, d)``.

The cache key covers everything that changes a feature: the backbone fingerprint (architecture,
weights digest, preprocessing), the view configuration and seed, whether tokens were requested,
the identity of every image (path, size, modification time) and, for views made on the device
(``views_on="device"``, :mod:`labelless.views.device`), the path. Features are written in shards,
each atomically, so an interrupted extraction resumes at the first missing shard and a
half-written file is never read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from labelless.utils.io import atomic_save, atomic_write_json, stable_hash
from labelless.utils.paths import default_cache_dir  # noqa: F401  (re-exported)
from labelless.views import View, sample_rng
from labelless.views.device import (
    DecodedDataset,
    collate_decoded,
    device_view,
    has_device_twin,
    make_views,
    resolve_views_on,
)

if TYPE_CHECKING:
    from labelless.backbones.base import Backbone

CACHE_VERSION = 1




@dataclass
class Features:
    """Frozen features of a data set under one view.

    embeds: (N, V, d) L2-normalised projected embeddings.
    cls:    (N, V, w) [CLS] tokens before the projection, when requested.
    labels: (N,) int64, -1 where unknown.
    """

    embeds: torch.Tensor
    labels: torch.Tensor
    cls: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.embeds.shape[0]


class ViewDataset(Dataset):
    """Wraps an image data set; item ``i`` is every requested view of image ``i``.

    Randomness comes from :func:`labelless.views.sample_rng` ``(seed, epoch, index)``, so the
    result does not depend on the worker that produced it.
    """

    def __init__(self, base, views: dict[str, View], seed: int = 0, epoch: int = 0):
        self.base = base.with_transform(None) if hasattr(base, "with_transform") else base
        self.views = views
        self.seed = seed
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = self.base[i]
        rng = sample_rng(self.seed, item["index"], self.epoch)
        out = {name: view(item["image"], rng) for name, view in self.views.items()}
        return {"views": out, "label": item["label"], "index": item["index"]}


def image_identity(dataset) -> str:
    """A digest of every image's (path, size, mtime): changes when any image changes."""
    ident = []
    for p in dataset.paths:
        try:
            st = os.stat(p)
            ident.append((str(p), st.st_size, st.st_mtime_ns))
        except OSError:
            ident.append((str(p), -1, -1))
    return stable_hash(ident, length=32)


def feature_cache_key(backbone: Backbone, view: View, dataset, seed: int, tokens: bool) -> str:
    """The cache key of :func:`extract_features` (see the module docstring).

    A device view's config carries ``views_on: device`` (and the loader's size bound), so the
    two paths never share an entry; the PIL path's keys are unchanged."""
    return stable_hash(
        {
            "version": CACHE_VERSION,
            "backbone": backbone.fingerprint,
            "view": view.config(),
            "seed": seed,
            "tokens": tokens,
            "images": image_identity(dataset),
            "n": len(dataset),
        },
        length=24,
    )


def _savez(path: Path, arrays: dict) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _loader(ds: Dataset, batch_size: int, num_workers: int, collate_fn=None) -> DataLoader:
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
        collate_fn=collate_fn,
    )


@torch.no_grad()
def encode_views(backbone: Backbone, views: torch.Tensor, tokens: bool = False):
    """Encode ``(B, V, 3, S, S)`` in one forward; returns ``(B, V, d)`` and ``(B, V, w)``/None."""
    b, v = views.shape[:2]
    out = backbone.encode_image(views.flatten(0, 1), tokens=tokens)  # (B*V, d)
    emb = out.embeds.reshape(b, v, -1)
    cls = out.cls.reshape(b, v, -1) if tokens and out.cls is not None else None
    return emb, cls


def extract_features(
    backbone: Backbone,
    dataset,
    view: View,
    *,
    seed: int = 0,
    tokens: bool = False,
    batch_size: int = 64,
    num_workers: int = 0,
    cache_dir: str | Path | None = None,
    shard_size: int = 2048,
    progress: bool = True,
    desc: str | None = None,
    views_on: str = "cpu",
) -> Features:
    """Features of every image of ``dataset`` under ``view`` (cached when ``cache_dir`` is set).

    ``dataset`` is an :class:`~labelless.data.folders.ImageDataset`; its transform is ignored.
    The cache trusts ``backbone.fingerprint``: code that changes the weights in place must call
    ``backbone.mark_tuned(changed_params)`` before caching again (or pass ``cache_dir=None``).
    ``views_on``: ``cpu`` makes the views in the loader with PIL; ``device`` decodes in the
    loader and makes the views on the backbone's device (:mod:`labelless.views.device`; views
    without a device twin stay on ``cpu``); ``auto``: ``device`` on CUDA.
    """
    n = len(dataset)
    views_on = resolve_views_on(views_on, backbone.device)
    dview = device_view(view, backbone) if views_on == "device" and has_device_twin(view) else None
    view = dview or view
    labels = torch.as_tensor(list(dataset.labels), dtype=torch.long)
    key = feature_cache_key(backbone, view, dataset, seed, tokens)
    root = Path(cache_dir) / "features" / key if cache_dir is not None else None
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
        meta_path = root / "meta.json"
        if not meta_path.exists():
            atomic_write_json(
                meta_path,
                {
                    "backbone": backbone.fingerprint,
                    "view": view.config(),
                    "seed": seed,
                    "tokens": tokens,
                    "n": n,
                    "dataset": getattr(dataset, "name", ""),
                },
            )
    # Under torchrun, shard k is computed (or read from the cache) by rank k % world_size, then
    # every rank receives every shard from its owner, so all ranks end with identical features in
    # data set order. A single process owns every shard.
    from labelless.engine import distributed

    ws, rank = distributed.world_size(), distributed.rank()
    bounds = [(s, min(n, s + shard_size)) for s in range(0, n, shard_size)]
    mine = [i for i in range(len(bounds)) if i % ws == rank]
    device = backbone.device
    was_training = backbone.training
    backbone.eval()
    results: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
    encoded = 0
    bar = tqdm(total=sum(bounds[i][1] - bounds[i][0] for i in mine), unit="img",
               desc=desc or f"features [{view.name}]", disable=not progress)
    try:
        for i in mine:
            start, stop = bounds[i]
            shard = root / f"shard_{start:09d}_{stop:09d}.npz" if root is not None else None
            if shard is not None and shard.exists():
                with np.load(shard) as z:
                    results[i] = (torch.from_numpy(z["embeds"]), torch.from_numpy(z["cls"]) if tokens else None)
                bar.update(stop - start)
                continue
            # Index into the whole data set, so each image's randomness (its crops) is seeded by
            # its own index whatever the shard size or the number of ranks.
            if dview is not None:
                ds, collate = DecodedDataset(dataset, {"v": dview}, seed=seed), collate_decoded
            else:
                ds, collate = ViewDataset(dataset, {"v": view}, seed=seed), None
            if (start, stop) != (0, n):
                ds = Subset(ds, range(start, stop))
            e_parts, c_parts = [], []
            for batch in _loader(ds, batch_size, num_workers, collate):
                if dview is not None:
                    x = make_views(batch, {"v": dview}, device)["v"]  # (B, V, 3, S, S)
                else:
                    x = batch["views"]["v"].to(device, non_blocking=True)
                e, c = encode_views(backbone, x, tokens)
                e_parts.append(e.float().cpu())
                if tokens:
                    c_parts.append(c.float().cpu())
                bar.update(e.shape[0])
                encoded += e.shape[0]
            e_all = torch.cat(e_parts)
            c_all = torch.cat(c_parts) if tokens else None
            if shard is not None:
                arrays = {"embeds": e_all.numpy()}
                if tokens:
                    arrays["cls"] = c_all.numpy()
                atomic_save(shard, lambda p, a=arrays: _savez(p, a))
            results[i] = (e_all, c_all)
    finally:
        bar.close()
        backbone.train(was_training)
    if ws > 1:  # merge: every shard from its owner, in data set order
        for i in range(len(bounds)):
            results[i] = distributed.broadcast_object(results.get(i), src=i % ws)
    embeds = [results[i][0] for i in range(len(bounds))]
    clss = [results[i][1] for i in range(len(bounds))] if tokens else []
    emb = torch.cat(embeds) if embeds else torch.zeros(0, view.num_views, backbone.embed_dim)
    cls = torch.cat(clss) if tokens and clss else None
    return Features(
        embeds=emb, labels=labels, cls=cls,
        meta={"cache_key": key, "view": view.config(), "encoded_here": encoded},
    )
