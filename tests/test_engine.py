"""The training loop on a toy method: it learns, resumes exactly, stops cleanly on a
non-finite loss, groups weight decay as configured and follows the documented schedule."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from labelless.engine import NonFiniteLossError, OptimConfig, TrainLoop, load_checkpoint
from labelless.engine.loop import EpochSampler, lr_scheduler, param_groups
from labelless.errors import ConfigError, LabellessError

N, D, C = 40, 6, 3


class ToyData(Dataset):
    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(N, D, generator=g)
        w = torch.randn(D, C, generator=g)
        self.y = (self.x @ w).argmax(1)

    def __len__(self):
        return N

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i], "index": i}


class ToyMethod:
    """Linear classifier; uses torch's global RNG (input noise) to exercise RNG restore, and
    keeps a non-parameter state (a running count of seen samples)."""

    def __init__(self, nan_at: int | None = None, stop_at: int | None = None, stop_in_epoch_end=None):
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(D, 8), nn.LayerNorm(8), nn.Linear(8, C))
        self.seen = torch.zeros(N)
        self.nan_at, self.stop_at, self.stop_in_epoch_end = nan_at, stop_at, stop_in_epoch_end
        self.snapshot = None
        self.steps = []

    def named_trainable(self):
        return list(self.model.named_parameters())

    def training_step(self, batch, step):
        if self.stop_at is not None and step == self.stop_at:
            raise KeyboardInterrupt
        self.steps.append(step)
        self.seen[batch["index"]] += 1
        x = batch["x"] + 0.05 * torch.randn_like(batch["x"])
        loss = nn.functional.cross_entropy(self.model(x), batch["y"])
        if self.nan_at is not None and step == self.nan_at:
            self.snapshot = {n: p.detach().clone() for n, p in self.model.named_parameters()}
            loss = loss * float("nan")
        return {"loss": loss, "acc": (self.model(x).argmax(1) == batch["y"]).float().mean()}

    def state_dict(self):
        return {"seen": self.seen.clone()}

    def load_state_dict(self, state):
        self.seen = state["seen"].clone()

    def on_epoch_end(self, epoch):
        if self.stop_in_epoch_end is not None and epoch == self.stop_in_epoch_end:
            self.stop_in_epoch_end = None
            raise KeyboardInterrupt
        return {"monitor_seen": float(self.seen.sum())}


def _cfg(**kw):
    base = dict(lr=0.05, epochs=3, batch_size=8, weight_decay=0.01, warmup_steps=2, min_lr=1e-4)
    base.update(kw)
    return OptimConfig(**base)


def _loop(method, out, cfg, seed=3):
    data = ToyData()
    return TrainLoop(method, lambda epoch: data, cfg, out, seed=seed, progress=False)


def _params(method):
    return {n: p.detach().clone() for n, p in method.model.named_parameters()}


def _lr_per_step(out, cfg) -> list[float]:
    """The optimiser's learning rate at every training step of a toy run."""
    seen = []

    class Spy(ToyMethod):
        def training_step(self, batch, step):
            seen.append(loop.opt.param_groups[0]["lr"])
            return super().training_step(batch, step)

    loop = _loop(Spy(), out, cfg)
    loop.run()
    return seen


def _strip_time(history):
    return [{k: v for k, v in row.items() if k != "time_s"} for row in history]


def test_loss_decreases_and_logs(tmp_path):
    m = ToyMethod()
    hist = _loop(m, tmp_path, _cfg(epochs=8, batch_size=5)).run()
    assert len(hist) == 8
    assert hist[-1]["loss"] < 0.6 * hist[0]["loss"]
    assert hist[-1]["acc"] > hist[0]["acc"]
    assert hist[-1]["monitor_seen"] == 8 * N  # every sample once per epoch
    assert torch.equal(m.seen, torch.full((N,), 8.0))
    rows = list(csv.DictReader(open(tmp_path / "train_log.csv")))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 9))
    assert float(rows[-1]["loss"]) == pytest.approx(hist[-1]["loss"])
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 8 and state["global_step"] == 8 * 8
    for n, p in m.model.named_parameters():
        assert torch.equal(state["params"][n], p.detach())
    # a second fresh run into the same folder refuses to overwrite the checkpoint
    with pytest.raises(LabellessError, match="already holds a checkpoint"):
        _loop(ToyMethod(), tmp_path, _cfg(epochs=8, batch_size=5)).run()


@pytest.mark.parametrize("stop_at", [7, 13])  # mid-epoch (3 epochs of 5 steps)
def test_resume_mid_run_equals_uninterrupted(tmp_path, stop_at):
    cfg = _cfg(checkpoint_every=3)
    ref = ToyMethod()
    ref_hist = _loop(ref, tmp_path / "ref", cfg).run()

    crashed = ToyMethod(stop_at=stop_at)
    with pytest.raises(KeyboardInterrupt):
        _loop(crashed, tmp_path / "run", cfg).run()
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    # the last checkpoint before the stop (every 3 steps and at each epoch end)
    assert state["global_step"] == max(3 * (stop_at // 3), 5 * (stop_at // 5))

    resumed = ToyMethod()  # fresh process: initial weights, empty state
    hist = _loop(resumed, tmp_path / "run", cfg).run(resume=True)
    assert resumed.steps[0] == state["global_step"]  # continues, does not redo steps
    for n, p in _params(resumed).items():
        assert torch.equal(p, _params(ref)[n]), n
    assert torch.equal(resumed.seen, ref.seen)
    assert _strip_time(hist) == _strip_time(ref_hist)


@pytest.mark.parametrize("drop_scheduler_state", [False, True])
def test_resume_with_accumulation_and_warmup_is_exact(tmp_path, drop_scheduler_state):
    """The schedule's state travels in the checkpoint (a checkpoint written before it did is
    replayed from the update count): the resumed run's lr and weights equal an uninterrupted run's."""
    cfg = _cfg(epochs=3, grad_accum=2, warmup_steps=3, checkpoint_every=2)  # 15 micro-batches
    ref = ToyMethod()
    ref_hist = _loop(ref, tmp_path / "ref", cfg).run()
    crashed = ToyMethod(stop_at=9)
    with pytest.raises(KeyboardInterrupt):
        _loop(crashed, tmp_path / "run", cfg).run()
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["global_step"] == 8 and state["scheduler"]["last_epoch"] == 4
    if drop_scheduler_state:
        state.pop("scheduler")
        torch.save(state, tmp_path / "run" / "checkpoint.pt")
    resumed = ToyMethod()
    loop = _loop(resumed, tmp_path / "run", cfg)
    hist = loop.run(resume=True)
    for n, p in _params(resumed).items():
        assert torch.equal(p, _params(ref)[n]), n
    assert _strip_time(hist) == _strip_time(ref_hist)
    assert loop.opt.param_groups[0]["lr"] == pytest.approx(cfg.min_lr)


def test_resume_after_last_step_of_an_epoch(tmp_path):
    """Killed after the step checkpoint that ends an epoch but before the epoch-end save."""
    cfg = _cfg(checkpoint_every=5)  # 40 / 8 = 5 steps per epoch
    ref = ToyMethod()
    ref_hist = _loop(ref, tmp_path / "ref", cfg).run()
    crashed = ToyMethod(stop_in_epoch_end=2)
    with pytest.raises(KeyboardInterrupt):
        _loop(crashed, tmp_path / "run", cfg).run()
    resumed = ToyMethod()
    hist = _loop(resumed, tmp_path / "run", cfg).run(resume=True)
    for n, p in _params(resumed).items():
        assert torch.equal(p, _params(ref)[n]), n
    assert _strip_time(hist) == _strip_time(ref_hist)


def test_resume_checks_seed(tmp_path):
    cfg = _cfg(epochs=1)
    _loop(ToyMethod(), tmp_path, cfg, seed=1).run()
    with pytest.raises(LabellessError, match="seed 1"):
        _loop(ToyMethod(), tmp_path, cfg, seed=2).run(resume=True)


def test_non_finite_loss_stops_before_the_update(tmp_path):
    m = ToyMethod(nan_at=6)
    loop = _loop(m, tmp_path, _cfg(checkpoint_every=4))
    with pytest.raises(NonFiniteLossError) as err:
        loop.run()
    msg = str(err.value)
    assert "step 6" in msg and "epoch 2" in msg and "Weights were not updated" in msg
    assert str(tmp_path / "checkpoint.pt") in msg
    for n, p in _params(m).items():
        assert torch.equal(p, m.snapshot[n]), n
        assert torch.isfinite(p).all()
    # before any checkpoint the message says so
    m2 = ToyMethod(nan_at=0)
    with pytest.raises(NonFiniteLossError, match="step 0.*none \\(no checkpoint yet\\)"):
        _loop(m2, tmp_path / "b", _cfg()).run()


def test_weight_decay_groups():
    lin, ln = nn.Linear(4, 4), nn.LayerNorm(4)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    named = [("lin.weight", lin.weight), ("lin.bias", lin.bias), ("ln.weight", ln.weight),
             ("ln.bias", ln.bias), ("frozen.weight", frozen.weight)]

    def groups(no_decay):
        out = param_groups(named, _cfg(no_decay=no_decay, weight_decay=0.3))
        return [({id(p) for p in g["params"]}, g["weight_decay"]) for g in out]

    ids = {n: id(p) for n, p in named}
    assert groups("bias") == [({ids["lin.weight"], ids["ln.weight"]}, 0.3),
                              ({ids["lin.bias"], ids["ln.bias"]}, 0.0)]
    assert groups("1d") == [({ids["lin.weight"]}, 0.3),
                            ({ids["lin.bias"], ids["ln.weight"], ids["ln.bias"]}, 0.0)]
    assert groups("none") == [({ids["lin.weight"], ids["lin.bias"], ids["ln.weight"], ids["ln.bias"]}, 0.3)]


def _schedule(total, cfg):
    """The lr of updates 0..total (one more than planned: it must stay at min_lr) from the
    loop's scheduler, stepped as the loop steps it."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched, lrs = lr_scheduler(opt, total, cfg), []
    for _ in range(total + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched.last_epoch < total:
            sched.step()
    return lrs


def _closed_form_lr(k, total, cfg):
    """The schedule as the loop computed it by hand before it used torch's schedulers (the
    formula in the docs): linear warm-up, then cosine to min_lr, clamped after ``total``."""
    if cfg.warmup_steps and k < cfg.warmup_steps:
        return cfg.lr * (k + 1) / cfg.warmup_steps
    t = (k - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def test_cosine_schedule_endpoints():
    cfg = _cfg(lr=1.0, min_lr=0.1, warmup_steps=0)
    lrs = _schedule(100, cfg)
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[50] == pytest.approx(0.55)
    assert lrs[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    w = _cfg(lr=1.0, min_lr=0.0, warmup_steps=4)
    lrs = _schedule(20, w)
    assert lrs[:5] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert lrs[12] == pytest.approx(0.5)
    assert lrs[20] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("lr,min_lr,warmup,total", [
    (1.0, 0.1, 0, 100), (1.0, 0.0, 4, 20), (5e-5, 2e-6, 10, 1000), (2e-3, 0.0, 1, 7),
    (1e-3, 1e-5, 3, 3), (1.0, 0.0, 5, 3), (5e-5, 0.0, 100, 20000),
])
def test_scheduler_gives_the_closed_form_lr_at_every_update(lr, min_lr, warmup, total):
    cfg = _cfg(lr=lr, min_lr=min_lr, warmup_steps=warmup)
    expected = [_closed_form_lr(k, total, cfg) for k in range(total + 1)]
    assert _schedule(total, cfg) == pytest.approx(expected, rel=1e-12, abs=1e-12 * lr)


@pytest.mark.parametrize("accum,warmup,min_lr", [(1, 0, 0.0), (3, 2, 1e-3), (4, 5, 0.0)])
def test_loop_lr_per_micro_batch_follows_the_closed_form(tmp_path, accum, warmup, min_lr):
    # 3 epochs of 5 micro-batches; with accumulation every micro-batch of update k uses lr(k)
    cfg = _cfg(epochs=3, grad_accum=accum, warmup_steps=warmup, lr=0.2, min_lr=min_lr)
    seen = _lr_per_step(tmp_path, cfg)
    total = 15 // accum
    assert seen == pytest.approx([_closed_form_lr(s // accum, total, cfg) for s in range(15)], rel=1e-12)


def test_loop_applies_schedule(tmp_path):
    cfg = _cfg(epochs=2, warmup_steps=0, lr=0.2, min_lr=0.0)
    seen = _lr_per_step(tmp_path, cfg)
    total = 10
    assert seen == pytest.approx([0.1 * (1 + math.cos(math.pi * s / total)) for s in range(total)])


def test_epoch_sampler_resumes_the_same_order():
    full = EpochSampler(20, seed=1, epoch=2).order()
    assert sorted(full) == list(range(20))
    assert list(EpochSampler(20, seed=1, epoch=2, start=7)) == full[7:]
    assert EpochSampler(20, seed=1, epoch=3).order() != full
    assert EpochSampler(20, seed=2, epoch=2).order() != full


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="lr"):
        OptimConfig(lr=0)
    m = ToyMethod()
    m.model.requires_grad_(False)
    with pytest.raises(ConfigError, match="nothing to train"):
        _loop(m, tmp_path, _cfg())


class _PrecisionProbe(ToyMethod):
    """Records the dtype of its linear layer's output inside each training step."""

    def __init__(self):
        super().__init__()
        self.dtypes = []

    def training_step(self, batch, step):
        self.dtypes.append(self.model[0](batch["x"]).dtype)
        return super().training_step(batch, step)


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("auto", torch.float32),
                                              ("bf16", torch.bfloat16)])
def test_loop_honours_the_precision_setting_on_cpu(tmp_path, precision, dtype):
    """optim.precision decides the autocast of the training step: bf16 autocasts on the trained
    parameters' device (here the CPU, the branch GPUs run), fp32 never, auto only on CUDA."""
    m = _PrecisionProbe()
    hist = _loop(m, tmp_path, _cfg(epochs=1, precision=precision)).run()
    assert set(m.dtypes) == {dtype} and math.isfinite(hist[0]["loss"])
    from labelless.engine.precision import resolve_precision

    assert resolve_precision("auto", "cuda") == "bf16" and resolve_precision("auto", "cpu") == "fp32"


def test_precision_config_error():
    with pytest.raises(ConfigError, match="precision"):
        OptimConfig(precision="fp16")
