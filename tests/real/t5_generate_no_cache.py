"""Corpus: a T5 encoder-decoder (random init, small config) generating greedily with use_cache=False.

transformers runs the encoder once and then calls the model with decoder_input_ids (and the
encoder's outputs) every step; without the cache each step feeds the whole decoded prefix again.
Expected: generation, the recomputed tokens counted on decoder_input_ids, the cache's gain measured.
"""

import torch
from transformers import T5Config, T5ForConditionalGeneration

import accel

VOCAB = 1024
SOURCE_LENGTH = 64
NEW_TOKENS = 24
# Four sequences at once, as a batched translation or summarization job runs.
BATCH = 4

torch.manual_seed(0)
config = T5Config(
    d_model=256,
    d_ff=512,
    num_layers=3,
    num_heads=4,
    d_kv=64,
    vocab_size=VOCAB,
    decoder_start_token_id=0,
    pad_token_id=0,
    eos_token_id=None,
)
model = T5ForConditionalGeneration(config).eval()
source = torch.randint(2, VOCAB, (BATCH, SOURCE_LENGTH), generator=torch.Generator().manual_seed(0))


def generate(model: T5ForConditionalGeneration, ids: torch.Tensor) -> torch.Tensor:
    return model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, use_cache=False)


pipeline = accel.Pipeline(model=model, inputs=(source,), generate=generate, name="t5_generate_no_cache")
