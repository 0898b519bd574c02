"""A CNN on high-resolution images whose first layers hold most of the activation memory.

The first convolution runs at full 448x448 resolution with 16 channels (12 MiB of activations);
after a stride-4 pooling every later layer needs a fraction of that. This is the shape in which
patch-based inference (running the leading layers tile by tile) cuts peak memory several times.
`accel profile examples/highres_cnn.py` reports memory_peak with the predicted reduction.
"""

import torch
from torch import nn

import accel

torch.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(3, 16, 3, padding=1),
    nn.ReLU(),
    nn.MaxPool2d(4),
    nn.Conv2d(16, 32, 3, padding=1, stride=2),
    nn.ReLU(),
    nn.Conv2d(32, 64, 3, padding=1, stride=2),
    nn.ReLU(),
    nn.Conv2d(64, 64, 3, padding=1, stride=2),
    nn.ReLU(),
    nn.AdaptiveAvgPool2d(1),
    nn.Flatten(),
    nn.Linear(64, 10),
).eval()
pipeline = accel.Pipeline(model=model, inputs=(torch.randn(1, 3, 448, 448),), name="highres_cnn")
