"""Planted: a model of hundreds of tiny elementwise ops on 16-element tensors.

Each op's roofline time is nanoseconds; eager dispatch costs microseconds per op. Expected:
overhead is primary.
"""

import torch
from torch import nn

import accel


class TinyOps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(100):
            x = torch.tanh(x * self.scale + 0.1)
        return x


torch.manual_seed(0)
pipeline = accel.Pipeline(model=TinyOps().eval(), inputs=(torch.randn(1, 16),), name="hw_tiny_ops")
