"""A dict batch reaches a user's generate function as keyword arguments, as it reaches the model,
and an error raised there is named as the generate stage's (the model may never have been called)."""

from __future__ import annotations

import pytest
import torch

import accel
from accel.core.errors import PipelineError
from accel.profiling.stages import measure_pipeline

transformers = pytest.importorskip("transformers")


def tiny_lm() -> torch.nn.Module:
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    return transformers.GPT2LMHeadModel(config).eval()


def translate(model, input_ids, attention_mask):
    """A user's generate function, written against the tokenizer's keys."""
    return model.generate(
        input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=3, do_sample=False, pad_token_id=0
    )


def batch() -> dict[str, torch.Tensor]:
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 0]])
    return {"input_ids": ids, "attention_mask": (ids > 0).long()}


def test_a_dict_batch_is_unpacked_into_generate_keyword_arguments():
    pipeline = accel.Pipeline(model=tiny_lm(), inputs=batch(), generate=translate)
    assert pipeline.forward_stage == "generate"
    with torch.inference_mode():
        tokens = pipeline.forward(pipeline.inputs)
        expected = translate(pipeline.model, **pipeline.inputs)
    assert tokens.shape == (2, 7) and torch.equal(tokens, expected)
    data = measure_pipeline(pipeline, budget_seconds=0.5)
    assert data.model_latency is not None and data.model_latency.median > 0


def test_a_tuple_batch_still_reaches_generate_as_positional_arguments():
    seen = []
    pipeline = accel.Pipeline(
        model=torch.nn.Identity(), inputs=(torch.ones(1), torch.zeros(1)), generate=lambda m, a, b: seen.append((a, b))
    )
    pipeline.forward(pipeline.inputs)
    assert len(seen) == 1 and torch.equal(seen[0][1], torch.zeros(1))


def test_an_error_in_generate_names_the_generate_stage_not_the_model():
    def strict(model, input_ids):  # takes no attention_mask: the call itself raises
        return model(input_ids)

    pipeline = accel.Pipeline(model=tiny_lm(), inputs=batch(), generate=strict)
    with pytest.raises(PipelineError, match="generate stage raised TypeError") as raised:
        measure_pipeline(pipeline, budget_seconds=0.5)
    assert "fix generate" in raised.value.hint

    def broken(input_ids, attention_mask):
        raise ValueError("boom")

    plain = accel.Pipeline(model=broken, inputs=batch())
    assert plain.forward_stage == "model"
    with pytest.raises(PipelineError, match="model stage raised ValueError: boom"):
        measure_pipeline(plain, budget_seconds=0.5)
