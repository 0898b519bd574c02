"""Planted: a stream where 60 of 64 model inputs repeat one of 4 distinct inputs; a wide MLP.

Expected: repeated_inputs is primary.
"""

import torch
from torch import nn

import accel

torch.manual_seed(0)
DISTINCT = [torch.randn(256) for _ in range(4)]
model = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 1)).eval()

pipeline = accel.Pipeline(model=model, source=[DISTINCT[(i * 7) % 4] for i in range(64)], batch_size=8)
