"""A conv net on a large batch (32 images of 3x64x64): its time is in big convolutions, where a CPU
with bf16 units (AVX512-BF16, AMX) runs bfloat16 several times faster than float32."""
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(
    nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
    nn.Conv2d(32, 64, 3, padding=1, stride=2), nn.ReLU(),
    nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
    nn.Conv2d(64, 128, 3, padding=1, stride=2), nn.ReLU(),
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10),
).eval()
example_inputs = (torch.randn(32, 3, 64, 64),)
