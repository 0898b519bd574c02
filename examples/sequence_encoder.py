"""A sentence encoder over variable-length token sequences, padded to the longest in each batch.

Lengths follow a long tail, as real text does: most sequences hold 8 to 48 tokens, one in ten holds
200 to 256. Batches are taken in arrival order, so nearly every batch of 16 holds one long sequence
and is padded to its length: most of what the encoder computes is padding. The encoder masks
padding in attention and pools with the mask, so each sequence's embedding does not depend on the
padding around it. `accel profile examples/sequence_encoder.py` names padding; bucketing by length
is the cure.
"""

import math
import random

import torch
from torch import nn

import accel

VOCAB = 4000
DIM = 64
HEADS = 4


def make_sequences(count: int = 128, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    sequences = []
    for _ in range(count):
        length = rng.randint(200, 256) if rng.random() < 0.1 else rng.randint(8, 48)
        sequences.append([rng.randrange(1, VOCAB) for _ in range(length)])
    return sequences


def to_tensor(tokens: list[int]) -> torch.Tensor:
    return torch.tensor(tokens, dtype=torch.long)


def pad_collate(samples: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad with token 0 to the longest sequence; the mask is True on real tokens."""
    longest = max(len(s) for s in samples)
    ids = torch.zeros(len(samples), longest, dtype=torch.long)
    mask = torch.zeros(len(samples), longest, dtype=torch.bool)
    for row, sample in enumerate(samples):
        ids[row, : len(sample)] = sample
        mask[row, : len(sample)] = True
    return ids, mask


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.out = nn.Linear(DIM, DIM)
        self.norm1 = nn.LayerNorm(DIM)
        self.norm2 = nn.LayerNorm(DIM)
        self.ffn = nn.Sequential(nn.Linear(DIM, 4 * DIM), nn.GELU(), nn.Linear(4 * DIM, DIM))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(batch, length, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(DIM // HEADS)
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, DIM)
        x = x + self.out(attended)
        return x + self.ffn(self.norm2(x))


class Encoder(nn.Module):
    def __init__(self, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM, padding_idx=0)
        self.blocks = nn.ModuleList(Block() for _ in range(layers))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x, mask)
        weights = mask.unsqueeze(-1).to(x.dtype)
        return (x * weights).sum(1) / weights.sum(1)


def pipeline() -> accel.Pipeline:
    torch.manual_seed(0)
    return accel.Pipeline(
        model=Encoder().eval(), source=make_sequences(), decode=to_tensor, collate=pad_collate, batch_size=16
    )
