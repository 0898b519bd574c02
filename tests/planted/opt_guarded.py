"""Planted for the fidelity guard: a model whose outputs hold every kind of leaf the guard must
watch, plus dead work (matmuls whose results are thrown away) that a candidate can drop to be
much faster. Corrupting candidates (opt_corrupt.py) drop the dead work AND damage one thing; the
guard alone must reject them, and keep the faithful one.

Outputs, per sample: `logits` (10 classes around a large common offset, as trained classifiers'
logits often are), `boxes` (4 values at 1/100 of the logits' spread, next to them) and `label`
(an int64 that does not come from the logits)."""

import torch
from torch import nn

import accel

LOGIT_OFFSET = 100.0
BOX_SCALE = 0.01
DEAD_SIZE = 160
DEAD_CALLS = 8
SAMPLES, BATCH_SIZE, FEATURES, CLASSES = 64, 8, 16, 10


class GuardedModel(nn.Module):
    def __init__(self, dead_work: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.head = nn.Linear(FEATURES, CLASSES)
        self.box = nn.Linear(FEATURES, 4)
        self.register_buffer("dead", torch.randn(DEAD_SIZE, DEAD_SIZE))
        self.dead_work = dead_work

    def without_dead_work(self) -> "GuardedModel":
        model = GuardedModel(dead_work=False)
        model.load_state_dict(self.state_dict())
        return model.eval()

    def forward(self, x: torch.Tensor) -> dict:
        for _ in range(DEAD_CALLS if self.dead_work else 0):
            torch.mm(self.dead, self.dead)
        return {
            "logits": LOGIT_OFFSET + self.head(x),
            "boxes": BOX_SCALE * self.box(x),
            "label": (x[:, 0] > 0).long(),
        }


def samples() -> list:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(FEATURES, generator=generator) for _ in range(SAMPLES)]


def accuracy(results: list) -> float:
    """Share of samples whose top class is even: a metric on the logits alone."""
    return sum(int(r["logits"].argmax()) % 2 == 0 for r in results) / len(results)


def pipeline() -> accel.Pipeline:
    return accel.Pipeline(model=GuardedModel().eval(), source=samples(), batch_size=BATCH_SIZE, name="guarded")


def pipeline_with_metric() -> accel.Pipeline:
    return pipeline().replace(metric=accuracy)
