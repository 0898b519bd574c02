"""Corpus: a high-resolution CNN whose patchable stage is its first 5 of 13 layers.

A 512x512 image goes through a full-resolution stem (conv, batch norm, ReLU, then a stride-4 conv),
where nearly all activation memory lives; GroupNorm, which normalizes over the whole feature map,
ends the spatially local prefix at layer 5. Expected: memory_peak, with the stage planned as the
first 5 layers and a predicted reduction close to what patch.inference measures.
"""

import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(3, 16, 3, padding=1),
    nn.BatchNorm2d(16),
    nn.ReLU(),
    nn.Conv2d(16, 32, 4, stride=4),
    nn.ReLU(),
    nn.GroupNorm(8, 32),
    nn.Conv2d(32, 64, 3, stride=2, padding=1),
    nn.ReLU(),
    nn.Conv2d(64, 64, 3, stride=2, padding=1),
    nn.ReLU(),
    nn.AdaptiveAvgPool2d(1),
    nn.Flatten(),
    nn.Linear(64, 10),
).eval()
example_inputs = (torch.randn(1, 3, 512, 512),)
