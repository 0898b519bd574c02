"""Planted for the optimize engine: a small model that also does two pieces of dead work (large
matmuls whose results are thrown away), switchable by flags. Test-only optimizers turn them off;
the model's outputs do not change, so the engine must keep them, and compose them."""

import torch
from torch import nn

import accel

DEAD_SIZE = 200
# Dead matmuls per call: A dominates (skipping it is ~7x), B is what is left after A.
DEAD_A_CALLS, DEAD_B_CALLS = 24, 4


class DeadWorkModel(nn.Module):
    def __init__(self, dead_a: bool = True, dead_b: bool = True, extra: int = 0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(32, 8)
        self.register_buffer("dead", torch.randn(DEAD_SIZE, DEAD_SIZE))
        self.dead_a, self.dead_b, self.extra = dead_a, dead_b, extra

    def variant(self, **flags) -> "DeadWorkModel":
        model = DeadWorkModel(**{"dead_a": self.dead_a, "dead_b": self.dead_b, "extra": self.extra, **flags})
        model.load_state_dict(self.state_dict())
        return model.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(int(self.dead_a) * DEAD_A_CALLS + int(self.dead_b) * DEAD_B_CALLS + self.extra):
            torch.mm(self.dead, self.dead)
        return self.linear(x)


def pipeline() -> accel.Pipeline:
    torch.manual_seed(1)
    samples = [torch.randn(32) for _ in range(16)]
    return accel.Pipeline(model=DeadWorkModel().eval(), source=samples, batch_size=8)
