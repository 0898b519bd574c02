"""Planted: variable-length sequences padded to the longest in the batch, a compute-bound model.

One sequence in eight is 256 tokens long, the rest 8 to 16: nearly every batch of 8 is padded to
256. The model is a per-token MLP with masked mean pooling, so its work grows with padded length.
Expected: padding is primary.
"""

import random

import torch
from torch import nn

import accel

DIM = 64


def make_sequences(count: int = 64) -> list[list[int]]:
    rng = random.Random(0)
    return [[rng.randrange(1, 1000) for _ in range(256 if i % 8 == 3 else rng.randint(8, 16))] for i in range(count)]


def pad_collate(samples):
    longest = max(len(s) for s in samples)
    ids = torch.zeros(len(samples), longest, dtype=torch.long)
    mask = torch.zeros(len(samples), longest, dtype=torch.bool)
    for row, sample in enumerate(samples):
        ids[row, : len(sample)] = sample
        mask[row, : len(sample)] = True
    return ids, mask


class TokenMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(1000, DIM)
        self.mlp = nn.Sequential(nn.Linear(DIM, 512), nn.GELU(), nn.Linear(512, 512), nn.GELU(), nn.Linear(512, DIM))

    def forward(self, ids, mask):
        x = self.mlp(self.embed(ids))
        weights = mask.unsqueeze(-1).float()
        return (x * weights).sum(1) / weights.sum(1)


torch.manual_seed(0)
pipeline = accel.Pipeline(
    model=TokenMLP().eval(),
    source=make_sequences(),
    decode=lambda tokens: torch.tensor(tokens),
    collate=pad_collate,
    batch_size=8,
)
