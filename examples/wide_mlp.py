"""A wide MLP serving one request at a time (batch 1).

Each call multiplies one vector by about 100 MB of fp32 weights: about one FLOP per two bytes
read, far below any CPU's ridge point, so the time goes to streaming weights from memory.
`accel profile examples/wide_mlp.py` names memory_bandwidth; int8 weights move a quarter of the bytes.
"""

import torch
from torch import nn

import accel

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(2048, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 2048)).eval()
pipeline = accel.Pipeline(model=model, inputs=(torch.randn(1, 2048),), name="wide_mlp")
