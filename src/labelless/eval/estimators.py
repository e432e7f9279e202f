"""Label-free accuracy estimators (draft: candidates under evaluation)."""

from __future__ import annotations

import torch

DEFAULT_ESTIMATOR = "ac"


def _pred(p):
    return p.argmax(dim=1)


def ac(probs, ref=None):
    return 100.0 * float(probs.max(dim=1).values.mean())


def zeroshot_posterior(probs, ref):
    if ref is None:
        return None
    y = _pred(probs)
    return 100.0 * float(ref.gather(1, y[:, None]).mean())


def ensemble_posterior(probs, ref):
    if ref is None:
        return None
    y = _pred(probs)
    q = 0.5 * (probs + ref)
    return 100.0 * float(q.gather(1, y[:, None]).mean())


def atc_zs(probs, ref, frac=0.25):
    if ref is None:
        return None
    n = probs.shape[0]
    k = max(1, int(round(frac * n)))
    zc = ref.max(dim=1).values
    S = torch.argsort(zc, descending=True)[:k]
    y = _pred(probs)
    acc_s = float(ref[S].gather(1, y[S][:, None]).mean())
    conf = probs.max(dim=1).values
    t = torch.quantile(conf[S], 1 - acc_s)
    return 100.0 * float((conf >= t).double().mean())


def atc_self(probs, ref):
    """ATC with threshold fitted so that the zero-shot model's own ATC equals its AC, applied to
    the score scale of probs (wrong across models, a probe)."""
    if ref is None:
        return None
    zc = ref.max(dim=1).values
    t = torch.quantile(zc, 1 - float(zc.mean()))
    conf = probs.max(dim=1).values
    return 100.0 * float((conf >= t).double().mean())


def cot(probs, ref=None, iters=300, eps=0.01, max_n=20000):
    n, C = probs.shape
    p = probs
    if n > max_n:
        g = torch.Generator().manual_seed(0)
        p = p[torch.randperm(n, generator=g)[:max_n]]
        n = max_n
    cost = 1.0 - p  # (n, C)
    a = torch.full((n,), 1.0 / n, dtype=p.dtype)
    b = torch.full((C,), 1.0 / C, dtype=p.dtype)
    logK = -cost / eps
    f = torch.zeros(n, dtype=p.dtype)
    g_ = torch.zeros(C, dtype=p.dtype)
    for _ in range(iters):
        f = eps * (a.log() - torch.logsumexp((g_[None, :] + eps * logK) / eps, dim=1))
        g_ = eps * (b.log() - torch.logsumexp((f[:, None] + eps * logK) / eps, dim=0))
    plan = torch.exp((f[:, None] + g_[None, :] - cost) / eps)
    return 100.0 * (1.0 - float((plan * cost).sum()))


CANDIDATES = {
    "ac": ac,
    "zeroshot_posterior": zeroshot_posterior,
    "ensemble_posterior": ensemble_posterior,
    "atc_zs": atc_zs,
    "atc_self": atc_self,
    "cot": cot,
}


def all_estimates(probs, ref):
    out = {}
    for k, fn in CANDIDATES.items():
        out[k] = fn(probs, ref)
    return out
