"""Planted for optimize: a batch-1 wide MLP. Its time is in big fp32 matmuls on one sample, where
ONNX Runtime and int8 weights pay off many times over on a CPU."""

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 16)).eval()
example_inputs = (torch.randn(1, 1024),)
