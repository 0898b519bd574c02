"""Planted (memory optimizers): a CNN on a 512x512 image whose first stage holds the peak activation.

The stem keeps full resolution with 16-32 channels before downsampling, so its activations are tens
of MB while the rest is small. Expected: patch.inference cuts the measured peak by half or more with
outputs equal within 1e-5.
"""

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(3, 16, 3, padding=1),
    nn.BatchNorm2d(16),
    nn.ReLU(),
    nn.Conv2d(16, 32, 3, padding=1),
    nn.ReLU(),
    nn.MaxPool2d(2),
    nn.Conv2d(32, 32, 3, stride=2, padding=1),
    nn.ReLU(),
    nn.Conv2d(32, 64, 3, stride=2, padding=1),
    nn.ReLU(),
    nn.AdaptiveAvgPool2d(1),
    nn.Flatten(),
    nn.Linear(64, 10),
).eval()
example_inputs = (torch.randn(1, 3, 512, 512),)
