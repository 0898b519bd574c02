"""Planted: the loader limits throughput (a slow Python transform, no decode stage, a tiny model).

Expected: data_loading is primary; no input_decoding (there is no decode stage).
"""

import torch
from torch import nn

import accel


def slow_features(seed: int) -> torch.Tensor:
    # Pure-Python feature engineering, about a millisecond per sample.
    values = [((seed * 31 + i * 17) % 101) / 101.0 for i in range(20000)]
    pooled = [sum(values[j::64]) / len(values[j::64]) for j in range(64)]
    return torch.tensor(pooled)


pipeline = accel.Pipeline(model=nn.Linear(64, 4).eval(), source=list(range(64)), transform=slow_features, batch_size=8)
