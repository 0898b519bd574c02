"""Corpus: GPT-2 (random init, small config) generating 48 tokens greedily with use_cache=False.

Every step feeds the whole sequence again. Expected: generation, with the recomputed tokens counted
from the calls' token prefixes and the gain of use_cache=True measured.
"""

from gpt2_lm import build_model, generate_without_cache, prompt

import accel

pipeline = accel.Pipeline(
    model=build_model(), inputs=(prompt(),), generate=generate_without_cache, name="gpt2_generate_no_cache"
)
