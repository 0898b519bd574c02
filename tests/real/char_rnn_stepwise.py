"""Corpus: a stepwise character RNN, written the way tutorials write one (a Python loop over the
characters of each name, one GRUCell step each, batch 1).

Names of 3 to 12 characters are classified by language. The loop runs once per character, so the
model's graph depends on each input's length: a traced export (ONNX, OpenVINO) fixes the loop at
the example's length and is wrong or fails on every other length. Each sample has its own length
and torch's default collate cannot stack them, so a larger batch does not apply either. Expected:
`overhead` (hundreds of tiny ops per call, dispatch-bound), with `onnx.runtime`, `onnx.int8_dynamic`
and `batch.size` said "not applicable" with the reason, never "failed".
"""

import random

import torch
from torch import nn

import accel

LETTERS = "abcdefghijklmnopqrstuvwxyz'"
LANGUAGES = 18
HIDDEN = 64


class CharRNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(len(LETTERS), 16)
        self.cell = nn.GRUCell(16, HIDDEN)
        self.out = nn.Linear(HIDDEN, LANGUAGES)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        hidden = torch.zeros(chars.shape[0], HIDDEN)
        for step in range(chars.shape[1]):  # one step per character: the graph follows the length
            hidden = self.cell(self.embed(chars[:, step]), hidden)
        return torch.log_softmax(self.out(hidden), dim=-1)


def make_names(count: int = 48, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(LETTERS[:-1]) for _ in range(rng.randint(3, 12))) for _ in range(count)]


def encode(name: str) -> torch.Tensor:
    return torch.tensor([LETTERS.index(c) for c in name], dtype=torch.long)


def build_model() -> CharRNN:
    torch.manual_seed(0)
    return CharRNN().eval()


def pipeline() -> accel.Pipeline:
    return accel.Pipeline(model=build_model(), source=make_names(), transform=encode, batch_size=1, name="char_rnn")
