"""Corpus: a sentence-embedding service, written the way one is: a BERT encoder, mean pooling over
the real tokens, a stream of user queries in which the popular ones come back again and again.

The model is transformers' BertModel at random init from a small config (no download); queries are
tokenized by a word-hashing tokenizer and padded per batch. 96 queries, nine in ten one of three: most of the
model's work recomputes an embedding it already computed. Expected: repeated_inputs, cured by
`cache.results` (the built-in throughput recipe tries it first and keeps it).
"""

import random

import torch
from transformers import BertConfig, BertModel

import accel

CONFIG = BertConfig(
    vocab_size=4096,
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=256,
    max_position_embeddings=64,
)
POPULAR = [
    "cheap flights to lisbon",
    "how to reset my password",
    "weather tomorrow",
    "best pizza near me",
    "python list comprehension",
    "convert pdf to word",
    "train times to paris",
    "symptoms of flu",
    "opening hours of the museum",
    "how long to boil an egg",
    "exchange rate euro dollar",
    "what is a transformer model",
]


def make_queries(count: int = 96, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    # Nine queries in ten are one of the three most popular.
    return [rng.choice(POPULAR[:3]) if rng.random() < 0.9 else rng.choice(POPULAR) for _ in range(count)]


def tokenize(query: str) -> torch.Tensor:
    return torch.tensor([2] + [hash_word(w) for w in query.split()] + [3])


def hash_word(word: str) -> int:
    value = 0
    for char in word:
        value = (value * 131 + ord(char)) % (CONFIG.vocab_size - 4)
    return value + 4


def pad(samples: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    ids = torch.nn.utils.rnn.pad_sequence(samples, batch_first=True)
    return {"input_ids": ids, "attention_mask": (ids > 0).long()}


def build_model() -> BertModel:
    torch.manual_seed(0)
    return BertModel(CONFIG).eval()


def pipeline() -> accel.Pipeline:
    return accel.Pipeline(
        model=build_model(),
        source=make_queries(),
        transform=tokenize,
        collate=pad,
        batch_size=8,
        name="embedding_service",
    )
