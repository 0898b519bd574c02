"""Planted (data-path optimizers): a slow pure-Python transform (several ms per sample), tiny model.

Expected: loader.tune picks num_workers > 0; throughput grows towards the core count.
"""

import torch
from torch import nn

import accel


def slow_features(seed: int) -> torch.Tensor:
    values = [((seed * 31 + i * 17) % 101) / 101.0 for i in range(60000)]
    pooled = [sum(values[j::64]) / len(values[j::64]) for j in range(64)]
    return torch.tensor(pooled)


pipeline = accel.Pipeline(
    model=nn.Linear(64, 4).eval(), source=list(range(96)), transform=slow_features, batch_size=8, name="dp_loader_bound"
)
