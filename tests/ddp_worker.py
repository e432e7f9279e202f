"""Worker for tests/test_distributed.py: a few TrainLoop steps of a toy method.

Run under ``torchrun --nproc_per_node N`` (distributed) or plainly (one process). The toy loss
has a per-sample term and a batch-level term (a MUST-style fairness term on the gathered batch),
the two kinds of statistics the real methods have.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from labelless.engine import OptimConfig, TrainLoop
from labelless.engine.distributed import gather_cat, init_from_env, is_main


class ToyData(torch.utils.data.Dataset):
    def __init__(self, n: int = 48):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 6, generator=g)
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class ToyMethod:
    def __init__(self):
        torch.manual_seed(1)
        self.head = nn.Linear(6, 3)

    def named_trainable(self):
        return list(self.head.named_parameters())

    def training_step(self, batch, step):
        logits = self.head(batch["x"])  # (B, 3)
        ce = F.cross_entropy(logits, batch["y"])
        p_bar = gather_cat(logits.softmax(-1)).mean(0)  # (3,) over the global batch
        fair = -torch.log(p_bar).mean()
        return {"loss": ce + fair, "ce": ce, "fair": fair}


def main(out: str, batch_size: int, steps_epochs: int) -> None:
    init_from_env("cpu")
    method = ToyMethod()
    cfg = OptimConfig(optimizer="sgd", lr=0.5, momentum=0.0, weight_decay=0.0,
                      epochs=steps_epochs, batch_size=batch_size)
    loop = TrainLoop(method, lambda epoch: ToyData(), cfg, Path(out) / "run", seed=3, progress=False)
    loop.run()
    if is_main():
        torch.save({k: v.detach() for k, v in method.head.state_dict().items()}, Path(out) / "params.pt")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
