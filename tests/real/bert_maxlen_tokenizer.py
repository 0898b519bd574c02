"""A BERT encoder fed by a tokenizer that pads every sample to max_length, as most Hugging Face
snippets do: `tokenizer(text, padding="max_length", max_length=256, truncation=True)`.

The tokenizer is a real `tokenizers` word-level tokenizer trained in-process on the corpus's own
sentences (no download), wrapped in transformers' PreTrainedTokenizerFast; the model is
`transformers.BertModel` at random init from a small config. Sentences hold 4 to 30 words, so
about nine tenths of the 256 positions of every sample are padding, already in the samples: the
collated batch is exactly its samples, and only the attention mask says which positions are real.
There is no postprocess: each result is the model's output, trimmed by accel to the sample's real
tokens. Padding is the bottleneck; `batch.trim_padding` is its cure.

`tight_pipeline()` is the same model and tokenizer without the problem: sentences of one length,
tokenized per batch with padding="longest", so no position is padding.
"""

from __future__ import annotations

import functools
import random

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

import accel

MAX_LENGTH = 256
WORDS = (
    "the a cat dog sat ran on under mat rug quickly slowly red blue big small house garden tree river "
    "saw found near over because while and but then jumped slept barked purred"
).split()
CONFIG = BertConfig(
    vocab_size=64,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=MAX_LENGTH,
)


def make_sentences(count: int = 64, seed: int = 0, words: tuple[int, int] = (4, 30)) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(*words))) for _ in range(count)]


@functools.lru_cache(maxsize=1)
def build_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer trained on a few sentences, with [CLS] ... [SEP] around each text."""
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    tokenizer.train_from_iterator(make_sentences(200, seed=1) + [" ".join(WORDS)], trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]")), ("[SEP]", tokenizer.token_to_id("[SEP]"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )


def tokenize(text: str) -> dict[str, torch.Tensor]:
    encoded = build_tokenizer()(text, padding="max_length", max_length=MAX_LENGTH, truncation=True)
    return {key: torch.tensor(value) for key, value in encoded.items()}


def tokenize_batch(texts: list[str]) -> dict[str, torch.Tensor]:
    return dict(build_tokenizer()(texts, padding="longest", return_tensors="pt"))


def build_model() -> BertModel:
    torch.manual_seed(0)
    return BertModel(CONFIG).eval()


def pipeline() -> accel.Pipeline:
    return accel.Pipeline(
        model=build_model(),
        source=make_sentences(),
        decode=tokenize,
        batch_size=16,
        name="bert_maxlen_tokenizer",
    )


def tight_pipeline() -> accel.Pipeline:
    return accel.Pipeline(
        model=build_model(),
        source=make_sentences(words=(20, 20)),
        collate=tokenize_batch,
        batch_size=16,
        name="bert_tight_tokenizer",
    )
