"""Planted: a well-fed pipeline: ready tensors, all distinct, one size, a model that does the work.

Expected: no data-path finding above low severity.
"""

import torch
from torch import nn

import accel

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 1)).eval()

pipeline = accel.Pipeline(model=model, source=[torch.randn(256) for _ in range(64)], batch_size=8)
