"""Planted: decoding JPEG bytes limits throughput (Pillow decode + resize, a tiny CNN).

Expected: input_decoding is primary, and data_loading keeps only the non-decode rest of the wait.
"""

import io

import numpy as np
import torch
from PIL import Image
from torch import nn

import accel


def make_jpegs(count: int = 32) -> list[bytes]:
    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):
        pixels = rng.integers(0, 255, size=(384, 512, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
        images.append(buffer.getvalue())
    return images


def decode(data: bytes) -> torch.Tensor:
    image = Image.open(io.BytesIO(data)).convert("RGB").resize((32, 32), Image.BILINEAR)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


model = nn.Sequential(
    nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)
).eval()

pipeline = accel.Pipeline(model=model, source=make_jpegs(), decode=decode, batch_size=8)
