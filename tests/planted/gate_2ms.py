"""Planted for the gate benchmark: a model of about 2 ms per call on one core, with two kinds of
planted slowdown set from the environment, so one file can be measured unchanged or regressed.

ACCEL_GATE_SLOWDOWN=0.10 repeats the matmul block 10% more often: 10% more tensor work, and the
counts (FLOPs, op count) grow with it. ACCEL_GATE_HOST_SLOWDOWN=0.10 keeps the tensor ops exactly
as they are and adds host-side Python work after them, a fixed loop of interpreter arithmetic sized
to about 10% of the tensor work on the development machine (as a slow pre/post-processing step
would be): the counts cannot see it, only timing can. The benchmark reports the change it
measured, not this nominal share.
"""

import os

import torch
from torch import nn

BASE_REPEATS = 60
WIDTH = 192
# Python loop iterations that cost about as much as the tensor work (1.5 ms at ~50 ns per
# iteration on the development machine's AMD EPYC, measured in forked replicates).
HOST_ITERATIONS_AT_FULL_SHARE = 32_000


class RepeatedBlock(nn.Module):
    """The same matmul + tanh applied `repeats` times, then `host_share` of its time in Python."""

    def __init__(self, repeats: int, host_share: float) -> None:
        super().__init__()
        self.repeats = repeats
        self.host_share = host_share
        self.weight = nn.Parameter(torch.randn(WIDTH, WIDTH) / WIDTH**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.repeats):
            x = torch.tanh(x @ self.weight)
        checksum = 0
        for i in range(round(self.host_share * HOST_ITERATIONS_AT_FULL_SHARE)):
            checksum += i * i
        return x


slowdown = float(os.environ.get("ACCEL_GATE_SLOWDOWN", "0"))
host_slowdown = float(os.environ.get("ACCEL_GATE_HOST_SLOWDOWN", "0"))
torch.manual_seed(0)
model = RepeatedBlock(round(BASE_REPEATS * (1 + slowdown)), host_slowdown).eval()
example_inputs = (torch.randn(32, WIDTH),)
