"""Corpus: a Llama-style decoder (random init, small config: RMSNorm, rotary positions, grouped KV
heads) generating 48 tokens greedily with use_cache=False.

Expected: generation, as for GPT-2: recomputed tokens counted, the gain of use_cache=True measured.
"""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import accel

VOCAB = 1024

torch.manual_seed(0)
config = LlamaConfig(
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=VOCAB,
    max_position_embeddings=256,
    bos_token_id=0,
    eos_token_id=None,
    pad_token_id=0,
)
model = LlamaForCausalLM(config).eval()
prompt = torch.randint(0, VOCAB, (1, 32), generator=torch.Generator().manual_seed(0))


def generate(model: LlamaForCausalLM, ids: torch.Tensor) -> torch.Tensor:
    return model.generate(ids, max_new_tokens=48, do_sample=False, use_cache=False)


pipeline = accel.Pipeline(model=model, inputs=(prompt,), generate=generate, name="llama_generate_no_cache")
