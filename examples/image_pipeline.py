"""An image classifier fed JPEG bytes: decode with Pillow, resize, normalize, a small CNN.

Decoding 1024x768 JPEGs and resizing them down to 96x96 costs far more than the model itself:
accel profile names input decoding as the bottleneck.
"""

import io

import numpy as np
import torch
from PIL import Image
from torch import nn

import accel

SIZE = 96


def make_jpegs(count: int = 64, width: int = 1024, height: int = 768, seed: int = 0) -> list[bytes]:
    """Synthetic photos: smooth gradients plus noise, encoded as JPEG."""
    rng = np.random.default_rng(seed)
    images = []
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(count):
        base = (np.sin(xx / rng.uniform(20, 80)) + np.cos(yy / rng.uniform(20, 80))) * 60 + 128
        rgb = np.stack([base + rng.normal(0, 20, base.shape) for _ in range(3)], axis=-1)
        buffer = io.BytesIO()
        Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image = image.convert("RGB")
    return image.resize((SIZE, SIZE), Image.BILINEAR)


MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def transform(image: Image.Image) -> torch.Tensor:
    array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (array - MEAN) / STD


def make_model() -> nn.Module:
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
        model=make_model(),
        source=make_jpegs(),
        decode=decode,
        transform=transform,
        batch_size=16,
        postprocess=lambda logits: int(logits.argmax()),
    )
