"""Planted (data-path optimizers): a deterministic decode followed by a random augmentation.

Expected: cache.decoded caches decode only and keeps the random transform running every pass.
"""

import torch
from torch import nn

import accel


def decode(seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(int(seed))
    return torch.rand(3, 16, 16, generator=generator)


def random_flip(image: torch.Tensor) -> torch.Tensor:
    noise = torch.rand(()) * 0.01
    return (image.flip(-1) if torch.rand(()) < 0.5 else image) + noise


model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4)).eval()

pipeline = accel.Pipeline(
    model=model, source=list(range(16)), decode=decode, transform=random_flip, batch_size=4, name="dp_random_augment"
)
