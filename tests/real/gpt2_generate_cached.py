"""Corpus: the same GPT-2 generating with its KV cache on (use_cache=True, transformers' default).

Expected: no recomputation reported (each call is fed one new token after the cached ones).
"""

from gpt2_lm import build_model, generate_with_cache, prompt

import accel

pipeline = accel.Pipeline(
    model=build_model(), inputs=(prompt(),), generate=generate_with_cache, name="gpt2_generate_cached"
)
