"""Corpus: an image classifier fed large PNG files, written the way a quick service is: each sample
is the file's bytes, decoded with Pillow and resized to the model's 64x64 input, then a small CNN.

The PNGs (640x480, noisy, so they compress poorly) are made in memory; decoding them costs far more
than the model. Expected: input_decoding, cured by `cache.decoded` from the second pass on (the
built-in throughput recipe tries it first and keeps it), labels unchanged.
"""

import io

import numpy as np
import torch
from PIL import Image
from torch import nn

import accel


def make_pngs(count: int = 24) -> list[bytes]:
    rng = np.random.default_rng(0)
    images = []
    for _ in range(count):
        pixels = rng.integers(0, 255, size=(480, 640, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images


def decode(data: bytes) -> torch.Tensor:
    image = Image.open(io.BytesIO(data)).convert("RGB").resize((64, 64), Image.BILINEAR)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def build_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    ).eval()


def pipeline() -> accel.Pipeline:
    return accel.Pipeline(
        model=build_model(),
        source=make_pngs(),
        decode=decode,
        postprocess=lambda logits: logits.argmax(-1),
        batch_size=8,
        name="png_image_classifier",
    )
