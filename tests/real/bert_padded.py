"""A BERT encoder over padded dict batches, written the way a transformers user writes it.

Token sequences with a long tail of lengths (most 8 to 40 tokens, one in eight 200 to 256) are
padded to the longest in each batch by a collate that returns `input_ids` and `attention_mask`,
as DataCollatorWithPadding does, and the model is called with keyword arguments. There is no
postprocess: each sample's result is the model's output, so `last_hidden_state` keeps the padded
length of its batch until accel trims it to the sample's real tokens. The model is
`transformers.BertModel` at random init from a small config (no download). Padding is the
bottleneck: `batch.bucket` is the cure, composed with a faster runtime where one wins.
"""

import random

import torch
from transformers import BertConfig, BertModel

import accel

CONFIG = BertConfig(
    vocab_size=2000,
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=256,
    max_position_embeddings=256,
)


def make_sequences(count: int = 96, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    sequences = []
    for i in range(count):
        length = rng.randint(200, 256) if i % 8 == 0 else rng.randint(8, 40)
        sequences.append([rng.randrange(1, CONFIG.vocab_size) for _ in range(length)])
    return sequences


def encode(tokens: list[int]) -> dict[str, torch.Tensor]:
    ids = torch.tensor(tokens, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def pad_collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Right padding to the longest sample, with the attention mask (1 on real tokens)."""
    longest = max(len(s["input_ids"]) for s in samples)
    batch = {
        "input_ids": torch.zeros(len(samples), longest, dtype=torch.long),
        "attention_mask": torch.zeros(len(samples), longest, dtype=torch.long),
    }
    for row, sample in enumerate(samples):
        for key in batch:
            batch[key][row, : len(sample[key])] = sample[key]
    return batch


def build_model() -> BertModel:
    torch.manual_seed(0)
    return BertModel(CONFIG).eval()


def pipeline() -> accel.Pipeline:
    return accel.Pipeline(
        model=build_model(),
        source=make_sequences(),
        transform=encode,
        collate=pad_collate,
        batch_size=16,
        name="bert_padded",
    )
