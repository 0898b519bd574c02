"""Planted for batch.bucket: a stream of token sequences whose lengths vary 8..256 (most short),
padded to the longest sample in each batch. The encoder's cost grows with the padded length, so
batches that mix one long sample with short ones are mostly padding; sorting by length cuts the
work several times. The output is a masked mean over real tokens, so it does not depend on padding."""

import torch
from torch import nn

import accel

VOCAB, DIM = 1000, 64


def make_sequences(count: int = 96, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    sequences = []
    for i in range(count):
        length = 256 if i % 8 == 0 else int(torch.randint(8, 24, (1,), generator=g))
        sequences.append(torch.randint(1, VOCAB, (length,), generator=g).tolist())
    return sequences


def transform(tokens: list[int]) -> torch.Tensor:
    return torch.tensor(tokens, dtype=torch.long)


def collate(samples: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(s) for s in samples)
    ids = torch.zeros(len(samples), longest, dtype=torch.long)
    mask = torch.zeros(len(samples), longest, dtype=torch.bool)
    for i, s in enumerate(samples):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = True
    return ids, mask


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(VOCAB, DIM)
        self.mlp = nn.Sequential(
            nn.Linear(DIM, 4 * DIM),
            nn.GELU(),
            nn.Linear(4 * DIM, DIM),
            nn.Linear(DIM, 4 * DIM),
            nn.GELU(),
            nn.Linear(4 * DIM, DIM),
        )

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.mlp(self.embed(ids))
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def pipeline() -> accel.Pipeline:
    return accel.Pipeline(
        model=Encoder().eval(), source=make_sequences(), transform=transform, collate=collate, batch_size=8
    )
