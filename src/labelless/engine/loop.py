"""The one training loop every adaptation method uses.

A method supplies three things: the parameters to train (named, so the optimizer groups are
explicit), ``training_step(batch, step) -> dict of losses`` (``"loss"`` is optimised, the rest is
logged) and, optionally, ``state_dict``/``load_state_dict`` for non-parameter state (prototype
banks, running means) and ``on_epoch_end(epoch) -> dict`` for per-epoch monitoring.

The loop owns the rest: AdamW or SGD with weight decay only where asked, a per-iteration cosine
schedule with optional linear warm-up, gradient accumulation, a deterministic sample order
(``EpochSampler``: a permutation seeded by ``(seed, epoch)``, resumable mid-epoch), atomic
checkpoints with optimizer, scheduler and RNG state, ``resume``, a per-epoch CSV log, and a stop
with a clear message on a non-finite loss, before any NaN reaches the weights.
"""

from __future__ import annotations

import csv
import math
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from labelless.engine import distributed
from labelless.engine.checkpoint import load_checkpoint, save_checkpoint
from labelless.engine.precision import PRECISIONS, autocast, resolve_precision
from labelless.errors import ConfigError, LabellessError


class NonFiniteLossError(LabellessError):
    """A loss became NaN or infinite; the message names the step and the last good checkpoint."""


class NonFiniteWeightsError(LabellessError):
    """An optimiser step left NaN or infinite values in the trained tensors (a finite loss with
    an exploding update); raised before such weights are checkpointed or saved."""


#: optimiser steps between two checks that the trained tensors are finite (each check is one
#: reduction per tensor and one host sync); the weights are also checked before every save
FINITE_CHECK_EVERY = 20


def non_finite(named) -> list[str]:
    """Names of the floating-point tensors in ``named`` (``(name, tensor)`` pairs) that hold a
    NaN or an infinity; one host sync when all are finite."""
    named = [(n, t) for n, t in named if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not named:
        return []
    flags = torch.stack([torch.isfinite(t.detach()).all().cpu() for _, t in named])
    if bool(flags.all()):
        return []
    return [n for (n, _), ok in zip(named, flags.tolist()) if not ok]


@dataclass
class OptimConfig:
    """Optimisation settings shared by every trained method.

    optimizer: ``adamw`` or ``sgd``.
    lr: peak learning rate.
    min_lr: the cosine schedule's floor (DPA/FAIR decay to 2e-6).
    weight_decay: decoupled weight decay.
    no_decay: which parameters get no weight decay: ``bias`` (DPA: only biases),
        ``1d`` (nanoGPT: every 1-D tensor, i.e. biases and norm gains) or ``none``.
    betas, eps: AdamW moments.
    momentum: SGD momentum.
    epochs: passes over the training data.
    batch_size: samples per optimizer step (before accumulation).
    grad_accum: micro-batches per optimizer step.
    warmup_steps: linear warm-up iterations before the cosine.
    grad_clip: max global gradient norm (None: off).
    checkpoint_every: also checkpoint every N steps inside an epoch (0: only at epoch ends).
    precision: ``fp32``, ``bf16`` (autocast on the trained parameters' device, CUDA or CPU) or
        ``auto`` (bf16 on CUDA, fp32 elsewhere); the one precision of the run, which methods
        also use for their own forwards (:mod:`labelless.engine.precision`).
    """

    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 5e-5
    min_lr: float = 0.0
    weight_decay: float = 0.1
    no_decay: Literal["bias", "1d", "none"] = "bias"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.9
    epochs: int = 15
    batch_size: int = 32
    grad_accum: int = 1
    warmup_steps: int = 0
    grad_clip: float | None = None
    checkpoint_every: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"

    def __post_init__(self):
        def check(name: str, value, ok: bool, want: str) -> None:
            if not ok:
                raise ConfigError(f"optim.{name} must be {want}, got {value!r}")

        finite = {n: getattr(self, n) for n in ("lr", "min_lr", "weight_decay", "eps", "momentum")}
        finite.update({f"betas[{i}]": b for i, b in enumerate(self.betas)})
        if self.grad_clip is not None:
            finite["grad_clip"] = self.grad_clip
        for name, value in finite.items():
            # `not (x > 0)` is also true for NaN, which `x <= 0` lets through
            check(name, value, isinstance(value, (int, float)) and math.isfinite(value), "a finite number")
        check("lr", self.lr, self.lr > 0, "> 0")
        check("min_lr", self.min_lr, self.min_lr >= 0, ">= 0")
        check("weight_decay", self.weight_decay, self.weight_decay >= 0, ">= 0")
        check("eps", self.eps, self.eps > 0, "> 0")
        check("momentum", self.momentum, 0 <= self.momentum <= 1, "in [0, 1]")
        check("betas", self.betas, len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
              "two numbers in [0, 1)")
        if self.grad_clip is not None:
            check("grad_clip", self.grad_clip, self.grad_clip > 0, "> 0 (or none)")
        if self.epochs < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("optim.epochs, optim.batch_size and optim.grad_accum must be >= 1")
        check("warmup_steps", self.warmup_steps, self.warmup_steps >= 0, ">= 0")
        check("checkpoint_every", self.checkpoint_every, self.checkpoint_every >= 0, ">= 0")
        check("precision", self.precision, self.precision in PRECISIONS, f"one of {', '.join(PRECISIONS)}")


class EpochSampler(Sampler[int]):
    """A permutation of ``range(n)`` seeded by ``(seed, epoch)``, optionally from an offset.

    Resuming mid-epoch skips the ``start`` samples already seen, so the resumed run sees
    exactly the samples the uninterrupted one would have.
    """

    def __init__(
        self, n: int, seed: int, epoch: int, start: int = 0, shuffle: bool = True,
        rank: int = 0, world_size: int = 1, batch_size: int = 1,
    ):
        self.n, self.seed, self.epoch, self.start, self.shuffle = n, seed, epoch, start, shuffle
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def _indices(self) -> list[int]:
        rest = self.order()[self.start :]
        if self.world_size == 1:
            return rest
        # Distributed: every global batch of world_size * batch_size consecutive samples of the
        # same permutation is split into contiguous per-rank slices, so N ranks x batch B see
        # what one rank with batch N x B sees. A last global batch too small to give every rank
        # a sample is dropped (a rank without a batch would stall the collective calls).
        g = self.world_size * self.batch_size
        out: list[int] = []
        for i in range(0, len(rest), g):
            chunk = rest[i : i + g]
            per = math.ceil(len(chunk) / self.world_size)
            if len(chunk) < self.world_size:
                break
            out += chunk[self.rank * per : (self.rank + 1) * per]
        return out

    def __iter__(self):
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())


class _StepModule(nn.Module):
    """Wraps a method's ``training_step`` as a module owning the trainable parameters.

    DistributedDataParallel needs a module whose forward produces the loss and whose parameters
    are the ones to synchronise; the method itself stays a plain object.
    """

    def __init__(self, method, named: list[tuple[str, nn.Parameter]]):
        super().__init__()
        object.__setattr__(self, "method", method)  # not a sub-module: its params are below
        self.params = nn.ParameterList([p for _, p in named])

    def forward(self, batch, step: int):
        return self.method.training_step(batch, step)


def param_groups(named: list[tuple[str, nn.Parameter]], cfg: OptimConfig) -> list[dict]:
    """Optimizer groups: weight decay everywhere except where ``cfg.no_decay`` says."""
    decay, no_decay = [], []
    for name, p in named:
        if not p.requires_grad:
            continue
        skip = (cfg.no_decay == "bias" and name.endswith("bias")) or (
            cfg.no_decay == "1d" and p.ndim < 2
        )
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def lr_scheduler(opt: torch.optim.Optimizer, total: int, cfg: OptimConfig) -> LRScheduler:
    """The schedule over ``total`` optimizer updates, stepped once per update: a linear
    warm-up from ``lr / warmup_steps`` to ``lr`` over ``warmup_steps`` updates, then a cosine
    from ``lr`` to ``min_lr`` over the remaining updates (it stays at ``min_lr`` after them).

    Update ``k`` uses ``lr * (k + 1) / warmup_steps`` while ``k < warmup_steps``, then
    ``min_lr + (lr - min_lr) * (1 + cos(pi * (k - warmup_steps) / (total - warmup_steps))) / 2``.
    """
    w = cfg.warmup_steps
    cosine = CosineAnnealingLR(opt, T_max=max(1, total - w), eta_min=cfg.min_lr)
    if not w:
        return cosine
    warmup = LinearLR(opt, start_factor=1.0 / w, end_factor=1.0, total_iters=max(1, w - 1))
    return SequentialLR(opt, [warmup, cosine], milestones=[w])


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.random.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def epoch_steps(n: int, batch_size: int, world_size: int | None = None) -> int:
    """Optimizer steps per epoch of ``n`` samples with ``batch_size`` per rank (the loop's own
    count; ``world_size`` None = the current process group's size). Under torchrun a last
    partial global batch is kept when every rank gets at least one sample of it."""
    ws = distributed.world_size() if world_size is None else world_size
    global_batch = batch_size * ws
    if ws == 1:
        return math.ceil(n / global_batch)
    return n // global_batch + int(n % global_batch >= ws)


class TrainLoop:
    """Runs ``method`` for ``cfg.epochs`` over ``dataset`` (see the module docstring).

    ``method`` must provide ``named_trainable() -> list[(name, Parameter)]`` and
    ``training_step(batch, step) -> dict[str, Tensor]``; ``collate``/``make_dataset(epoch)`` are
    optional hooks for methods whose inputs change per epoch (fresh random crops).
    """

    def __init__(
        self,
        method,
        dataset_for_epoch: Callable[[int], Dataset],
        cfg: OptimConfig,
        out_dir: str | Path,
        *,
        seed: int = 0,
        num_workers: int = 0,
        progress: bool = True,
        collate_fn: Callable | None = None,
    ):
        self.method = method
        self.dataset_for_epoch = dataset_for_epoch
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.seed = seed
        self.num_workers = num_workers
        self.progress = progress
        self.collate_fn = collate_fn
        self.named = [(n, p) for n, p in method.named_trainable() if p.requires_grad]
        if not self.named:
            raise ConfigError("nothing to train: the method selected no trainable parameter")
        self.world_size, self.rank = distributed.world_size(), distributed.rank()
        self.main = self.rank == 0
        self.progress = progress and self.main
        # cfg.precision on the trained parameters' device (auto: bf16 on GPUs, fp32 on CPUs)
        self.device = self.named[0][1].device
        self.precision = resolve_precision(cfg.precision, self.device)
        self.step_module: nn.Module | _StepModule = _StepModule(method, self.named)
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            # DDP averages the gradients of the trainable parameters over the ranks; methods
            # gather their batch-level statistics themselves (engine.distributed.gather_cat)
            self.step_module = DistributedDataParallel(self.step_module, find_unused_parameters=True)
        params = param_groups(self.named, cfg)
        if cfg.optimizer == "adamw":
            self.opt = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)
        else:
            self.opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
        self.sched: LRScheduler | None = None  # built by run(), which knows the number of updates
        self._sched_state: dict[str, Any] | None = None  # a loaded checkpoint's, until run() uses it
        self._last_lr = cfg.lr  # the lr of the last micro-batch (the epoch row's; the optimizer
        # already holds the next update's)
        self.ckpt_path = self.out_dir / "checkpoint.pt"
        self.log_path = self.out_dir / "train_log.csv"
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.history: list[dict[str, float]] = []
        # running sums of the logged values over the current epoch (checkpointed, so that a
        # mid-epoch resume logs the same epoch means as an uninterrupted run)
        self._sums: dict[str, float] = {}
        self._count = 0

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        method_state = self.method.state_dict() if hasattr(self.method, "state_dict") else {}
        return {
            "params": {n: p.detach().cpu() for n, p in self.named},
            "method": method_state,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict() if self.sched is not None else None,
            "last_lr": self._last_lr,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "history": self.history,
            "epoch_sums": dict(self._sums),
            "epoch_count": self._count,
            "rng": _rng_state(),
            "seed": self.seed,
        }

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteWeightsError` if a trained tensor (or a tensor of the method's
        own state) holds a NaN or an infinity; the previous checkpoint stays untouched."""
        method_state = self.method.state_dict() if hasattr(self.method, "state_dict") else {}
        extra = [(f"method.{k}", v) for k, v in method_state.items()] if isinstance(method_state, dict) else []
        bad = non_finite(list(self.named) + extra)
        if bad:
            last = self.ckpt_path if self.ckpt_path.exists() else "none (no checkpoint yet)"
            raise NonFiniteWeightsError(
                f"training diverged: after optimiser step {self.global_step // self.cfg.grad_accum} "
                f"(epoch {self.epoch + 1}) {len(bad)} trained tensor(s) hold NaN or infinite values "
                f"({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}); nothing was saved from this "
                f"point. Last good checkpoint: {last}. Lower optim.lr (now {self.cfg.lr:g}) or set "
                "optim.grad_clip."
            )

    def save(self) -> Path:
        self.check_finite()  # never checkpoint weights that are NaN/inf
        state = self.state_dict()  # every rank builds it (collective-free), rank 0 writes it
        if self.main:
            save_checkpoint(self.ckpt_path, state)
        distributed.barrier()
        return self.ckpt_path

    def load(self, path: str | Path | None = None) -> None:
        state = load_checkpoint(path or self.ckpt_path)
        if state.get("seed") != self.seed:
            raise LabellessError(
                f"checkpoint {path or self.ckpt_path} was made with seed {state.get('seed')}, "
                f"this run uses seed {self.seed}: resume with the same seed"
            )
        with torch.no_grad():
            named = dict(self.named)
            missing = set(named) - set(state["params"])
            if missing:
                raise LabellessError(
                    f"checkpoint does not match this run's trainable parameters (missing {sorted(missing)[:3]})"
                )
            for n, t in state["params"].items():
                named[n].copy_(t)
        if hasattr(self.method, "load_state_dict"):
            self.method.load_state_dict(state["method"])
        self.opt.load_state_dict(state["optimizer"])
        self._sched_state = state.get("scheduler")
        # before the scheduler was saved, the optimizer held the last micro-batch's lr
        self._last_lr = float(state.get("last_lr", self.opt.param_groups[0]["lr"]))
        self.epoch = state["epoch"]
        self.step_in_epoch = state["step_in_epoch"]
        self.global_step = state["global_step"]
        self.history = list(state["history"])
        self._sums = dict(state.get("epoch_sums", {}))
        self._count = int(state.get("epoch_count", 0))
        _set_rng_state(state["rng"])

    def _start_schedule(self, total: int, resumed: bool) -> None:
        """Build the schedule (it sets the lr of update 0); when resumed, bring it and the
        learning rate back to where the checkpoint left them."""
        saved_lr = [g["lr"] for g in self.opt.param_groups]
        for g in self.opt.param_groups:
            g.pop("initial_lr", None)
            g["lr"] = self.cfg.lr
        self.sched = lr_scheduler(self.opt, total, self.cfg)
        if not resumed:
            return
        if self._sched_state is not None:
            self.sched.load_state_dict(self._sched_state)
            for g, v in zip(self.opt.param_groups, saved_lr):
                g["lr"] = v
        else:  # a checkpoint from before the schedule was saved: replay its updates
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "step() before optimizer.step()"
                for _ in range(min(self.global_step // self.cfg.grad_accum, total)):
                    self.sched.step()
        self._sched_state = None

    # -- the loop ---------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, start: int) -> DataLoader:
        sampler = EpochSampler(
            len(dataset), self.seed, self.epoch, start=start,
            rank=self.rank, world_size=self.world_size, batch_size=self.cfg.batch_size,
        )
        return DataLoader(
            dataset,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            drop_last=False,
            # a data set that batches its own way (views made on the device) says so
            collate_fn=self.collate_fn or getattr(dataset, "collate_fn", None),
            pin_memory=torch.cuda.is_available(),
            # its own generator: creating the iterator must not consume torch's global RNG,
            # or a resumed run would draw different random numbers than an uninterrupted one
            generator=torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch),
        )

    def run(self, resume: bool = False) -> list[dict[str, float]]:
        """Train to the last epoch (continuing from the checkpoint when ``resume``)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        loaded = resume and self.ckpt_path.exists()
        if loaded:
            self.load()
        elif not resume and self.ckpt_path.exists():
            raise LabellessError(
                f"{self.out_dir} already holds a checkpoint: pass --resume to continue it, "
                "--overwrite to start again, or choose another output directory"
            )
        first = self.dataset_for_epoch(0)
        global_batch = self.cfg.batch_size * self.world_size
        steps_per_epoch = epoch_steps(len(first), self.cfg.batch_size, self.world_size)
        total = steps_per_epoch * self.cfg.epochs // self.cfg.grad_accum
        self._start_schedule(total, resumed=loaded)
        while self.epoch < self.cfg.epochs:
            dataset = first if self.epoch == 0 else self.dataset_for_epoch(self.epoch)
            start = self.step_in_epoch * global_batch
            if self.step_in_epoch == 0:
                self._sums, self._count = {}, 0
            lr = self._last_lr  # the epoch row's if no micro-batch is left (resumed at its end)
            t0 = time.time()
            bar = tqdm(
                self._loader(dataset, start), total=steps_per_epoch, initial=self.step_in_epoch,
                desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}", disable=not self.progress,
            )
            self.opt.zero_grad(set_to_none=True)
            for batch in bar:
                lr = self._last_lr = self.opt.param_groups[0]["lr"]
                accumulate = (self.global_step + 1) % self.cfg.grad_accum != 0
                sync = self.step_module.no_sync() if accumulate and self.world_size > 1 else nullcontext()
                with sync:
                    with autocast(self.precision, self.device):
                        losses = self.step_module(batch, self.global_step)
                    loss = losses["loss"].float()
                    bad = distributed.all_sum(torch.tensor(float(not torch.isfinite(loss)), device=loss.device))
                    if bad.item() > 0:
                        last = self.ckpt_path if self.ckpt_path.exists() else "none (no checkpoint yet)"
                        raise NonFiniteLossError(
                            f"non-finite loss ({loss.item()}) at epoch {self.epoch + 1}, step "
                            f"{self.global_step}; parts: "
                            f"{ {k: float(torch.as_tensor(v).detach()) for k, v in losses.items()} }. "
                            "Weights were not updated. "
                        f"Last good checkpoint: {last}. Lower the learning rate or check the data."
                        )
                    (loss / self.cfg.grad_accum).backward()
                self.step_in_epoch += 1
                self.global_step += 1
                if self.global_step % self.cfg.grad_accum == 0:
                    if self.cfg.grad_clip:
                        torch.nn.utils.clip_grad_norm_([p for _, p in self.named], self.cfg.grad_clip)
                    self.opt.step()
                    if self.sched.last_epoch < total:  # min_lr after the last planned update
                        self.sched.step()
                    self.opt.zero_grad(set_to_none=True)
                    if hasattr(self.method, "after_step"):
                        self.method.after_step(self.global_step)
                    if (self.global_step // self.cfg.grad_accum) % FINITE_CHECK_EVERY == 0:
                        self.check_finite()
                for k, v in losses.items():
                    v = distributed.all_mean(torch.as_tensor(v, dtype=torch.float32).detach())
                    self._sums[k] = self._sums.get(k, 0.0) + float(v)
                self._count += 1
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{lr:.2e}")
                if self.cfg.checkpoint_every and self.global_step % self.cfg.checkpoint_every == 0:
                    self.save()
            bar.close()
            row = {"epoch": self.epoch + 1, "lr": lr, "time_s": round(time.time() - t0, 3)}
            row.update({k: v / max(self._count, 1) for k, v in self._sums.items()})
            self.epoch += 1
            self.step_in_epoch = 0
            if hasattr(self.method, "on_epoch_end"):
                row.update(self.method.on_epoch_end(self.epoch) or {})
            self.history.append(row)
            if self.main:
                self._write_log()
            self.save()
        return self.history

    def _write_log(self) -> None:
        keys: list[str] = []
        for row in self.history:
            keys += [k for k in row if k not in keys]
        from labelless.utils.io import atomic_save

        def write(p: Path) -> None:
            with open(p, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=keys)
                w.writeheader()
                w.writerows(self.history)

        atomic_save(self.log_path, write)


