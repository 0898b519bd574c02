"""Corpus: fine-tuning with transformers' `Trainer`, written the way its examples are: a Dataset that
cleans and tokenizes each review in Python in __getitem__, `TrainingArguments` at their defaults
(`dataloader_num_workers=0`), `trainer.train()` at the top level.

The model is BertForSequenceClassification at random init from a small config (no download). The
Trainer builds its own DataLoader from the dataset; accel runs the file as a script and times that
loader against the steps. Expected: script mode, data_loading (the per-sample Python tokenizer
starves the model), cured by DataLoader workers.

    python tests/real/trainer_text_classifier.py [REVIEWS]

REVIEWS (320 by default) sets the training set's size: a test passes fewer through accel
(`accel optimize trainer_text_classifier.py -- 192`), so each of the search's runs is shorter.
"""

import random
import re
import sys
import tempfile

import torch
from torch.utils.data import Dataset
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

VOCAB = 1024
MAX_TOKENS = 32
WORDS = ["good", "bad", "film", "plot", "actor", "great", "boring", "scene", "music", "ending"]


def make_reviews(count: int, seed: int = 0) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    return [(" ".join(rng.choice(WORDS) for _ in range(rng.randint(200, 300))), rng.randrange(2)) for _ in range(count)]


class Reviews(Dataset):
    def __init__(self, reviews: list[tuple[str, int]]) -> None:
        self.reviews = reviews

    def __len__(self) -> int:
        return len(self.reviews)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        text, label = self.reviews[index]
        # Clean and hash every character in Python: the preprocessing that ends up in __getitem__.
        text = re.sub(r"[^a-z ]+", " ", text.lower())
        pieces, piece = [], 0
        for char in text:
            if char == " ":
                pieces.append(piece % (VOCAB - 2) + 2)
                piece = 0
            else:
                piece = (piece * 131 + ord(char)) % 1_000_003
        ids = ([1] + sorted(set(pieces)))[:MAX_TOKENS]
        ids += [0] * (MAX_TOKENS - len(ids))
        input_ids = torch.tensor(ids)
        return {"input_ids": input_ids, "attention_mask": (input_ids > 0).long(), "labels": torch.tensor(label)}


torch.manual_seed(0)
config = BertConfig(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=MAX_TOKENS,
)
model = BertForSequenceClassification(config)
arguments = TrainingArguments(
    output_dir=tempfile.mkdtemp(prefix="trainer-"),
    per_device_train_batch_size=32,
    num_train_epochs=1,
    learning_rate=1e-3,
    use_cpu=True,
    report_to=[],
    save_strategy="no",
    logging_strategy="no",
    disable_tqdm=True,
)
trainer = Trainer(
    model=model, args=arguments, train_dataset=Reviews(make_reviews(int(sys.argv[1]) if len(sys.argv) > 1 else 320))
)
trainer.train()
