"""`quantize.int8_dynamic` on transformers' GPT-2, whose projections are `Conv1D` (y = x @ W + b), not
nn.Linear: each becomes a dynamic-quantized Linear on a copy, the logits agree within the int8
guard, and the user's model keeps its Conv1D layers and weights."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

import accel
from accel.core.machine import describe_machine
from accel.optimizing.optimizers import OPTIMIZERS, Context, make_config
from accel.optimizing.optimizers.quantize import conv1d_as_linear_

# The cosine the int8 rules of the built-in recipes hold a candidate to is 0.995; logits stay above 0.99.
MIN_COSINE = 0.99
LAYERS = 2


def gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=500, n_embd=64, n_layer=LAYERS, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    return GPT2LMHeadModel(config).eval()


def test_conv1d_is_the_linear_it_computes():
    torch.manual_seed(0)
    holder = torch.nn.Sequential(Conv1D(12, 8))
    x = torch.randn(3, 5, 8)
    expected = holder(x)
    assert conv1d_as_linear_(holder) == 1 and isinstance(holder[0], torch.nn.Linear)
    assert holder[0].weight.shape == (12, 8) and torch.allclose(holder(x), expected, atol=1e-6)


def test_gpt2_conv1d_layers_are_quantized_and_the_user_model_is_untouched(tmp_path):
    model = gpt2()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    ids = torch.randint(0, 500, (2, 16), generator=torch.Generator().manual_seed(1))
    pipeline = accel.Pipeline(model=model, inputs={"input_ids": ids})
    optimizer = OPTIMIZERS.get("quantize.int8_dynamic")
    context = Context(machine=describe_machine("cpu"), workdir=tmp_path)
    assert optimizer.applicable(pipeline, context) is None
    applied = optimizer.apply(pipeline, make_config(optimizer, {}), context)
    quantized = applied.pipeline.model
    dynamic = torch.ao.nn.quantized.dynamic.Linear
    assert applied.state["conv1d_layers"] == 4 * LAYERS  # c_attn, c_proj, c_fc, mlp c_proj per block
    assert not any(isinstance(m, Conv1D) for m in quantized.modules())
    assert isinstance(quantized.transformer.h[0].attn.c_attn, dynamic)
    assert isinstance(quantized.transformer.h[0].mlp.c_fc, dynamic)
    with torch.inference_mode():
        expected = model(input_ids=ids).logits
        got = quantized(input_ids=ids).logits
    cosine = torch.nn.functional.cosine_similarity(expected.flatten(), got.flatten(), dim=0)
    assert cosine > MIN_COSINE
    assert sum(isinstance(m, Conv1D) for m in model.modules()) == 4 * LAYERS
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())
