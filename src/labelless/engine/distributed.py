"""Distributed training helpers (torchrun + torch.distributed; no home-made process management).

Launch any training command with ``torchrun``; :func:`init_from_env` reads torchrun's
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...), picks NCCL on GPUs and
gloo on CPUs, and pins each process to its local GPU. Without torchrun everything here is a
no-op, so the same code runs on one CPU, one GPU, several GPUs and several machines.

Methods whose losses depend on the whole batch (a fairness term's mean prediction, contrastive
negatives, prototype updates, weight normalisation) gather across ranks with
:func:`gather_cat` (differentiable) or :func:`all_mean`, so that N ranks x batch B behave like
one rank with batch N x B.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """Where this process stands: its rank, the world size, its local rank and device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def init_from_env(device: str = "auto") -> DistInfo:
    """Join torchrun's process group if launched by torchrun; otherwise a single process."""
    want_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    if ws <= 1:
        dev = ("cuda" if want_cuda else "cpu") if device == "auto" else device
        return DistInfo(device=dev)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if want_cuda else "gloo")
        # leave the group before the interpreter exits: a rank that finishes first and exits
        # with the group alive can abort in the backend's thread teardown (SIGABRT)
        atexit.register(_leave_group)
    if want_cuda:
        torch.cuda.set_device(local)
    return DistInfo(
        rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local,
        device=f"cuda:{local}" if want_cuda else "cpu",
    )


def _leave_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (B, ...) from every rank in rank order -> (W*B, ...), with gradients.

    Every rank must pass the same shape. Gradients flow back to each rank's own slice (the
    autograd-aware ``torch.distributed.nn`` all-gather), so a loss on the gathered batch trains
    exactly as the single-process loss on the whole batch.
    """
    if not is_distributed():
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), dim=0)


def all_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over ranks (no gradient)."""
    if not is_distributed():
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / world_size()


def all_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over ranks (no gradient)."""
    if not is_distributed():
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in a single process)."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
