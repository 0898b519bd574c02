"""Planted for the fidelity guard, with a real model: BertForSequenceClassification at random init
from a small config (no download), whose classifier rows share a common direction and a large bias,
as trained classifiers' logits often do: a large common part, and a small spread between classes
that decides the label. int8 and bf16 errors scale with the large part, so they flip labels while
one cosine over the flattened logits stays above 0.9999."""

import torch
from transformers import BertConfig, BertForSequenceClassification

import accel

HIDDEN, CLASSES, VOCAB, TOKENS, SAMPLES = 64, 10, 500, 32, 64
LOGIT_OFFSET = 50.0
CLASS_SPREAD = 0.01  # per-class deviation of the classifier rows from their common direction

torch.manual_seed(0)
config = BertConfig(
    vocab_size=VOCAB,
    hidden_size=HIDDEN,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    num_labels=CLASSES,
    max_position_embeddings=64,
)
model = BertForSequenceClassification(config).eval()
with torch.no_grad():
    model.classifier.weight.copy_(torch.randn(HIDDEN) + CLASS_SPREAD * torch.randn(CLASSES, HIDDEN))
    model.classifier.bias.fill_(LOGIT_OFFSET)

_generator = torch.Generator().manual_seed(1)
samples = [
    {
        "input_ids": torch.randint(0, VOCAB, (TOKENS,), generator=_generator),
        "attention_mask": torch.ones(TOKENS, dtype=torch.long),
    }
    for _ in range(SAMPLES)
]
pipeline = accel.Pipeline(model=model, source=samples, batch_size=8, name="offset_bert")
