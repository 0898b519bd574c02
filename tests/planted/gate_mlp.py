"""Planted for the gate: a small model whose work is set from the environment, so one file can be
measured unchanged or with a planted regression.

ACCEL_GATE_SLOWDOWN=0.10 repeats its matmul block 10% more often (10% more work per call, and as
many more FLOPs); ACCEL_GATE_EXTRA_LAYERS=N appends N more Linear layers (more FLOPs, parameters).
"""

import os

import torch
from torch import nn

BASE_REPEATS = 40
WIDTH = 128


class RepeatedBlock(nn.Module):
    """The same matmul + tanh applied `repeats` times: work in proportion to `repeats`."""

    def __init__(self, repeats: int) -> None:
        super().__init__()
        self.repeats = repeats
        self.weight = nn.Parameter(torch.randn(WIDTH, WIDTH) / WIDTH**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.repeats):
            x = torch.tanh(x @ self.weight)
        return x


slowdown = float(os.environ.get("ACCEL_GATE_SLOWDOWN", "0"))
extra_layers = int(os.environ.get("ACCEL_GATE_EXTRA_LAYERS", "0"))
torch.manual_seed(0)
model = nn.Sequential(
    RepeatedBlock(round(BASE_REPEATS * (1 + slowdown))), *[nn.Linear(WIDTH, WIDTH) for _ in range(extra_layers)]
).eval()
example_inputs = (torch.randn(16, WIDTH),)
