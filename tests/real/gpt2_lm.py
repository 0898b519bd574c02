"""Corpus helper: a GPT-2 language model at random init from a small config, and its generate call.

No download: the config is built in code. Greedy decoding through transformers' own generate(),
which calls the model with keyword arguments (input_ids=..., past_key_values=...), as users run it.
"""

import torch
from transformers import GPT2Config, GPT2LMHeadModel

VOCAB = 1024
PROMPT_LENGTH = 32
NEW_TOKENS = 48


def build_model() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        n_embd=256, n_layer=4, n_head=4, vocab_size=VOCAB, n_positions=256, bos_token_id=0, eos_token_id=None
    )
    return GPT2LMHeadModel(config).eval()


def prompt() -> torch.Tensor:
    return torch.randint(0, VOCAB, (1, PROMPT_LENGTH), generator=torch.Generator().manual_seed(0))


def generate_without_cache(model: GPT2LMHeadModel, ids: torch.Tensor) -> torch.Tensor:
    """As written in code that turned the cache off (or a model exported without one)."""
    return model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, use_cache=False, pad_token_id=0)


def generate_with_cache(model: GPT2LMHeadModel, ids: torch.Tensor) -> torch.Tensor:
    return model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, use_cache=True, pad_token_id=0)
