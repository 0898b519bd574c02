"""Planted for the memory target: an MLP on a large batch, so one forward call's activations (8 MB
each) dominate its peak memory. ONNX Runtime allocates its activations in an arena on the first
call; measured in-process after that call it would read as zero bytes."""

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(256, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 8)).eval()
example_inputs = (torch.randn(512, 256),)
