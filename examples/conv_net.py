"""A convolutional classifier run on large batches of 32x32 images.

3x3 convolutions over 64 and 128 channels reuse each weight and activation byte hundreds of times:
far above the ridge point, so the GEMM units limit it. `accel profile examples/conv_net.py` names
compute_bound (not memory_bandwidth), and recommends bf16 where the CPU has faster bf16 units.
"""

import torch
from torch import nn

import accel

torch.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(3, 64, 3, padding=1),
    nn.ReLU(),
    nn.Conv2d(64, 64, 3, padding=1),
    nn.ReLU(),
    nn.MaxPool2d(2),
    nn.Conv2d(64, 128, 3, padding=1),
    nn.ReLU(),
    nn.Conv2d(128, 128, 3, padding=1),
    nn.ReLU(),
    nn.AdaptiveAvgPool2d(1),
    nn.Flatten(),
    nn.Linear(128, 10),
).eval()
pipeline = accel.Pipeline(model=model, inputs=(torch.randn(16, 3, 32, 32),), name="conv_net")
