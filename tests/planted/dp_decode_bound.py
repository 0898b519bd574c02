"""Planted (data-path optimizers): JPEG decode is nearly all of the time; a tiny CNN.

Each sample is a 768x1024 JPEG decoded with Pillow and resized down to 64x64, so decode costs
milliseconds per sample while the model costs microseconds. Expected: cache.decoded gives a large
steady-state speedup, decode.reduced (Pillow draft mode) a smaller one within the pixel guard.
"""

import io

import numpy as np
import torch
from PIL import Image
from torch import nn

import accel

SIZE = 64


def make_jpegs(count: int = 24, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        # Smooth content (a low-resolution noise field upsampled), as photographs are.
        small = rng.integers(0, 255, size=(24, 32, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((1024, 768), Image.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def decode(data: bytes) -> torch.Tensor:
    image = Image.open(io.BytesIO(data)).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def normalize(image: torch.Tensor) -> torch.Tensor:
    return (image - 0.5) / 0.25


# A small model (pool to 8x8 first): decode is over 97% of a pass, as in the example.
model = nn.Sequential(nn.AvgPool2d(8), nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 2)).eval()

pipeline = accel.Pipeline(
    model=model, source=make_jpegs(), decode=decode, transform=normalize, batch_size=8, name="dp_decode_bound"
)
