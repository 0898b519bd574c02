"""Corpus: a plain fine-tuning script, written the way most are: a global model, the loop at top level.

A BERT-style classifier (transformers' BertForSequenceClassification at random init from a small
config, no download) is fine-tuned on review texts that a Dataset cleans and tokenizes in Python
per sample, the slow kind of preprocessing that ends up in __getitem__. There is no `if __name__ ==
"__main__"` guard and no `example_inputs`: accel must decide from the file's syntax tree that this
is a script and run it once, as a script (importing it would run the whole loop). Expected:
script mode, data_loading.

    python tests/real/finetune_text_classifier.py
"""

import random
import re
import unicodedata

import torch
from torch.utils.data import DataLoader, Dataset
from transformers import BertConfig, BertForSequenceClassification

VOCAB = 2048
MAX_TOKENS = 64
WORDS = ["good", "bad", "film", "plot", "actor", "great", "boring", "scene", "music", "ending", "slow", "fun"]


def make_reviews(count: int, seed: int = 0) -> list[tuple[str, int]]:
    """Long reviews, composed from a few hundred random sentences."""
    rng = random.Random(seed)
    sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 20))).capitalize() + "!" for _ in range(300)]
    return [
        (" ".join(rng.choices(sentences, k=rng.randint(300, 450))) + "  Really…  ", rng.randrange(2))
        for _ in range(count)
    ]


class Reviews(Dataset):
    def __init__(self, reviews: list[tuple[str, int]]) -> None:
        self.reviews = reviews

    def __len__(self) -> int:
        return len(self.reviews)

    def __getitem__(self, index: int):
        text, label = self.reviews[index]
        # Normalize and clean, then a hand-written tokenizer, character by character, in Python:
        # the usual preprocessing that ends up in __getitem__.
        text = unicodedata.normalize("NFKC", text).lower()
        text = re.sub(r"[^a-z0-9 ]+", " ", text)
        pieces, piece, length = [], 0, 0
        for char in text:
            if char == " " or length == 3:  # sub-word pieces of at most three characters
                if length:
                    pieces.append(piece % (VOCAB - 2) + 2)
                piece, length = 0, 0
                if char == " ":
                    continue
            piece = piece * 131 + ord(char)
            length += 1
        if length:
            pieces.append(piece % (VOCAB - 2) + 2)
        # A bag of pieces hashed into the fixed-length input (a cheap stand-in for a vocabulary).
        counts: dict[int, int] = {}
        for piece in pieces:
            counts[piece] = counts.get(piece, 0) + 1
        ids = ([1] + sorted(counts, key=lambda p: -counts[p]))[:MAX_TOKENS]
        ids += [0] * (MAX_TOKENS - len(ids))
        ids_tensor = torch.tensor(ids)
        return {"input_ids": ids_tensor, "attention_mask": (ids_tensor > 0).long(), "labels": torch.tensor(label)}


torch.manual_seed(0)
config = BertConfig(
    vocab_size=VOCAB,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=128,
    max_position_embeddings=MAX_TOKENS,
)
model = BertForSequenceClassification(config)
loader = DataLoader(Reviews(make_reviews(640)), batch_size=64, shuffle=True)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
model.train()
for epoch in range(1):
    total = 0.0
    for batch in loader:
        optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        total += loss.item()
    print(f"epoch {epoch}: mean loss {total / len(loader):.4f}")
