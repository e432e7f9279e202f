"""Pseudo-label churn: how many samples change pseudo-label from one epoch to the next.

A method that relabels its training images while it trains (FAIR, LaTTe-CLIP, FLYP + pseudo-
labels) calls :meth:`FlipTracker.update` with each batch's sample indices and pseudo-labels and
merges :meth:`FlipTracker.epoch_end` into its per-epoch log. The counts use no label, so they are
part of a run's label-free diagnostics (``label_free.pseudo_label_flips``). Steady churn late in
training means the pseudo-labels have not settled; a sudden drop to zero with a collapsing class
histogram means the model locked onto its own mistakes.
"""

from __future__ import annotations

import torch

from labelless.engine.distributed import all_sum

__all__ = ["FlipTracker"]


class FlipTracker:
    """Per-sample pseudo-labels of the current and the previous epoch.

    n: number of training samples (indices ``0..n-1``; grown if a larger index comes). Under torchrun every rank updates the
    samples of its own batches; :meth:`epoch_end` merges the ranks (each index is seen by one
    rank per epoch), so every rank reports the same counts.
    """

    def __init__(self, n: int):
        self.prev = torch.full((int(n),), -1, dtype=torch.long)
        self.cur = torch.full((int(n),), -1, dtype=torch.long)

    def update(self, index, labels) -> None:
        """Record pseudo-labels ``labels`` ``(B,)`` of the samples ``index`` ``(B,)``."""
        index = torch.as_tensor(index).long().cpu()
        if index.numel() and int(index.max()) >= self.cur.numel():  # n unknown when built
            grow = int(index.max()) + 1 - self.cur.numel()
            self.prev = torch.cat([self.prev, self.prev.new_full((grow,), -1)])
            self.cur = torch.cat([self.cur, self.cur.new_full((grow,), -1)])
        self.cur[index] = torch.as_tensor(labels).long().cpu()

    def epoch_end(self) -> dict[str, float]:
        """``{"pl_flips", "pl_flip_rate"}`` against the previous epoch (empty on the first).

        ``pl_flip_rate`` is in % of the samples pseudo-labelled in both epochs.
        """
        # ranks hold -1 for samples they did not see: +1, sum, -1 merges them
        cur = all_sum(self.cur + 1) - 1  # (n,)
        both = (self.prev >= 0) & (cur >= 0)
        row: dict[str, float] = {}
        if bool(both.any()):
            flips = int((both & (self.prev != cur)).sum())
            row = {"pl_flips": flips, "pl_flip_rate": 100.0 * flips / int(both.sum())}
        self.prev = torch.where(cur >= 0, cur, self.prev)
        self.cur = torch.full_like(self.cur, -1)
        return row

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"flip_prev": self.prev.clone(), "flip_cur": self.cur.clone()}

    def load_state_dict(self, state: dict) -> None:
        if "flip_prev" in state:  # checkpoints written before the tracker existed lack it
            self.prev = state["flip_prev"].clone().long()
            self.cur = state["flip_cur"].clone().long()
