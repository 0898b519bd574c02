"""The generation pass (accel.profiling.generation): the tokens each call was fed and recomputed.

The hardware analyzers' own tests are in tests/profiling/analyzers/test_<kind>.py."""

from __future__ import annotations

import pytest
import torch

import accel
from accel.core.machine import describe_machine
from accel.profiling.generation import cached_length, call_tokens, recomputed_tokens


def test_token_prefix_comparison():
    ids = torch.arange(10).reshape(1, 10)
    # no cache: the next call is fed the same 10 tokens and one more
    assert recomputed_tokens(torch.arange(11).reshape(1, 11), 0, (ids, 0)) == 10
    # a cache: fed one token after the 10 cached ones, even if it repeats the last token
    assert recomputed_tokens(torch.tensor([[9]]), 10, (torch.tensor([[9]]), 9)) == 0
    # a different prompt in the same position is not a recomputation
    assert recomputed_tokens(torch.arange(1, 12).reshape(1, 11), 0, (ids, 0)) == 0
    # a prefix that diverges after 4 tokens
    diverged = torch.cat([ids[:, :4], torch.full((1, 6), 99)], dim=1)
    assert recomputed_tokens(diverged, 0, (ids, 0)) == 4
    assert recomputed_tokens(ids, 0, None) == 0


def test_hf_keyword_calls_are_read():
    class Cache:
        def get_seq_length(self):
            return 12

    ids = torch.ones(2, 1, dtype=torch.long)
    assert call_tokens((), {"input_ids": ids, "past_key_values": Cache()}) is ids
    decoder = torch.ones(2, 3, dtype=torch.long)
    assert call_tokens((), {"input_ids": ids, "decoder_input_ids": decoder}) is decoder
    assert call_tokens((torch.randn(2, 4), ids), {}) is ids
    assert cached_length({"past_key_values": Cache()}) == 12
    assert cached_length({"past_key_values": ((torch.zeros(1, 2, 7, 4), torch.zeros(1, 2, 7, 4)),)}) == 7
    assert cached_length({}) == 0


@pytest.mark.parametrize("use_cache", [False, True])
def test_generation_pass_on_a_tiny_transformers_decoder(use_cache):
    """transformers' generate() calls the model with keywords; the pass reads them, counts what each
    call recomputed, and (without a cache) times the loop again with use_cache=True forced."""
    transformers = pytest.importorskip("transformers")
    from accel.profiling.generation import generation_pass

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_embd=32, n_layer=1, n_head=2, vocab_size=64, n_positions=64, bos_token_id=0, eos_token_id=None
    )
    model = transformers.GPT2LMHeadModel(config).eval()

    def generate(model, ids):
        return model.generate(ids, max_new_tokens=4, do_sample=False, use_cache=use_cache, pad_token_id=0)

    pipeline = accel.Pipeline(model=model, inputs=(torch.zeros(2, 6, dtype=torch.long),), generate=generate)
    generation = generation_pass(pipeline, pipeline.inputs, describe_machine("cpu"))
    assert [s.position for s in generation.steps] == [6, 7, 8, 9]
    assert generation.batch_size == 2 and "generate" not in model.__dict__  # the model is restored
    if use_cache:
        assert [s.tokens for s in generation.steps] == [6, 1, 1, 1]
        assert generation.recomputed_tokens == 0 and generation.cached_total_seconds is None
    else:
        assert [s.tokens for s in generation.steps] == [6, 7, 8, 9]
        assert [s.recomputed_tokens for s in generation.steps] == [0, 6, 7, 8]
        assert generation.recomputed_tokens == 2 * 21 and generation.computed_tokens == 2 * 30
        assert generation.cached_total_seconds is not None and generation.cache_outputs_equal is True
        assert [s.tokens for s in generation.cached_steps] == [6, 1, 1, 1]


def test_generation_pass_holds_its_budget_with_the_warm_up_loops_as_its_measurement():
    """A generate call slower than the pass's share (7 s a loop at load 6 against a 3 s budget made
    it spend 34 s) makes no loop beyond the warm-ups: they stand as the measurement, cut short."""
    import transformers

    from accel.core.budget import PassBudget

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_embd=32, n_layer=1, n_head=2, vocab_size=64, n_positions=64, bos_token_id=0, eos_token_id=None
    )
    model = transformers.GPT2LMHeadModel(config).eval()

    def generate(model, ids):
        return model.generate(ids, max_new_tokens=4, do_sample=False, use_cache=False, pad_token_id=0)

    pipeline = accel.Pipeline(model=model, inputs=(torch.zeros(2, 6, dtype=torch.long),), generate=generate)
    from accel.profiling.generation import generation_pass

    budget = PassBudget("generation", 0.0)
    generation = generation_pass(pipeline, pipeline.inputs, describe_machine("cpu"), budget=budget)
    assert budget.cut_short and budget.calls == 2  # one loop as written, one with the cache forced on
    assert [s.recomputed_tokens for s in generation.steps] == [0, 6, 7, 8]
    assert [s.tokens for s in generation.cached_steps] == [6, 1, 1, 1]
    roomy = PassBudget("generation", 600.0)
    generation_pass(pipeline, pipeline.inputs, describe_machine("cpu"), budget=roomy)
    assert not roomy.cut_short and roomy.calls == 2 + 2 * 3
