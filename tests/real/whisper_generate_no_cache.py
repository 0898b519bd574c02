"""Corpus: Whisper transcribing, written the way a speech pipeline is: log-mel features of a few
clips in, `generate` out, with the KV cache turned off (`use_cache=False`, a flag copied from a
snippet that worked around a cache bug).

WhisperForConditionalGeneration at random init from a tiny config (no download; 80 mel bins, 200
frames). transformers runs the audio encoder once, then calls the decoder with the whole decoded
prefix every step. Expected: generation (the recomputed tokens counted on decoder_input_ids, the
cache's gain measured), cured by generation.kv_cache with the same tokens out.
"""

import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

import accel

NEW_TOKENS = 40
CLIPS = 4
FRAMES = 200

torch.manual_seed(0)
config = WhisperConfig(
    vocab_size=512,
    num_mel_bins=80,
    d_model=256,
    encoder_layers=2,
    decoder_layers=3,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=512,
    decoder_ffn_dim=1024,
    max_source_positions=FRAMES // 2,
    max_target_positions=64,
    decoder_start_token_id=1,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
    begin_suppress_tokens=None,
    suppress_tokens=None,
)
model = WhisperForConditionalGeneration(config).eval()
features = torch.randn(CLIPS, 80, FRAMES, generator=torch.Generator().manual_seed(0))


def transcribe(model: WhisperForConditionalGeneration, input_features: torch.Tensor) -> torch.Tensor:
    return model.generate(
        input_features, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, use_cache=False
    )


pipeline = accel.Pipeline(model=model, inputs=(features,), generate=transcribe, name="whisper_generate_no_cache")
