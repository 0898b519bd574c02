"""The pipeline contract: run() order, batching, unpacking, validation, replace()."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import accel
from accel.core.errors import PipelineError
from accel.core.pipeline import batch_length, call_unpacked, split_batch


class Double(nn.Module):
    def forward(self, x):
        return x * 2


def test_run_returns_one_result_per_sample_in_source_order():
    source = [torch.tensor([float(i)]) for i in range(10)]
    pipeline = accel.Pipeline(model=Double(), source=source, batch_size=3, postprocess=lambda y: float(y))
    assert pipeline.run() == [2.0 * i for i in range(10)]


def test_stages_run_in_order_decode_transform_collate_model():
    pipeline = accel.Pipeline(
        model=Double(),
        source=["1", "2", "3"],
        decode=int,
        transform=lambda n: torch.tensor([n + 0.5]),
        batch_size=2,
        postprocess=lambda y: float(y),
    )
    assert pipeline.run() == [3.0, 5.0, 7.0]


def test_batch_plan_results_come_back_in_source_order():
    source = [torch.tensor([float(i)]) for i in range(6)]
    plan = lambda p: [[5, 0], [3, 1], [2, 4]]  # noqa: E731 - a bucketing-like plan
    pipeline = accel.Pipeline(
        model=Double(), source=source, batch_size=2, batch_plan=plan, postprocess=lambda y: float(y)
    )
    assert pipeline.run() == [2.0 * i for i in range(6)]


class Stream:
    """A re-iterable stream of samples (not a sequence)."""

    def __iter__(self):
        return (torch.tensor([float(i)]) for i in range(9))


@pytest.mark.parametrize("workers", [0, 2])
def test_iterable_source_keeps_order_with_workers(workers):
    pipeline = accel.Pipeline(
        model=Double(), source=Stream(), batch_size=2, num_workers=workers, postprocess=lambda y: float(y)
    )
    assert not pipeline.is_sequence
    assert pipeline.run() == [2.0 * i for i in range(9)]


def test_inputs_only_pipeline_runs_once():
    pipeline = accel.Pipeline(model=Double(), inputs=(torch.ones(2, 3),))
    (result,) = pipeline.run()
    assert torch.equal(result, torch.full((2, 3), 2.0))
    assert pipeline.example_batch() is pipeline.inputs


def test_batches_are_unpacked_as_the_contract_says():
    def f(*args, **kwargs):
        return args, kwargs

    assert call_unpacked(f, (1, 2)) == ((1, 2), {})
    assert call_unpacked(f, {"ids": 1}) == ((), {"ids": 1})
    assert call_unpacked(f, 5) == ((5,), {})


def test_replace_leaves_the_original_alone():
    pipeline = accel.Pipeline(model=Double(), inputs=(torch.ones(1),))
    other = pipeline.replace(batch_size=4)
    assert pipeline.batch_size == 1 and other.batch_size == 4


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model": None, "inputs": (torch.ones(1),)}, "model=...) must be"),
        ({"model": Double(), "inputs": (torch.ones(1),), "decode": "pillow"}, "decode=...) must be callable"),
        ({"model": Double(), "inputs": (torch.ones(1),), "batch_size": 2.0}, "batch_size=...) must be an int"),
        ({"model": Double(), "inputs": (torch.ones(1),), "batch_size": 0}, "batch_size=0) must be at least 1"),
        ({"model": Double(), "inputs": (torch.ones(1),), "num_workers": -1}, "must be 0 or more"),
        ({"model": Double()}, "needs a source of samples or an example batch"),
        ({"model": Double(), "source": 42}, "source=...) must be a sequence or an iterable"),
        (
            {"model": Double(), "inputs": (torch.ones(1),), "loader_options": {"shuffle": True}},
            "unknown loader options",
        ),
    ],
)
def test_wrong_types_are_pipeline_errors_with_a_hint(kwargs, message):
    with pytest.raises(PipelineError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        accel.Pipeline(**kwargs)
    assert info.value.hint


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 9), st.integers(1, 5))
def test_split_batch_gives_one_item_per_sample(size, width):
    output = torch.arange(size * width, dtype=torch.float32).reshape(size, width)
    items = split_batch(output, batch_length(output))
    assert len(items) == size and all(torch.equal(item, output[i]) for i, item in enumerate(items))
    pair = split_batch((output, output.sum(1)), size)
    assert len(pair) == size and torch.equal(pair[-1][0], output[-1])


# --- padded dict batches: per-sample results do not depend on the padding around them ----------
WIDTH = 4


class TokenEncoder(nn.Module):
    """HF-style: keyword inputs, a per-position output and a pooled one of width WIDTH."""

    def forward(self, input_ids, attention_mask):
        hidden = input_ids.float().unsqueeze(-1) * torch.arange(1.0, WIDTH + 1)
        pooled = (hidden * attention_mask.unsqueeze(-1)).sum(1)
        return {"last_hidden_state": hidden, "pooler_output": pooled}


def _encode(tokens):
    ids = torch.tensor(tokens, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _pad(samples, left=False):
    longest = max(len(s["input_ids"]) for s in samples)
    batch = {k: torch.zeros(len(samples), longest, dtype=torch.long) for k in ("input_ids", "attention_mask")}
    for row, sample in enumerate(samples):
        n = len(sample["input_ids"])
        where = slice(longest - n, longest) if left else slice(0, n)
        for key in batch:
            batch[key][row, where] = sample[key]
    return batch


def _token_pipeline(lengths, batch_size, **changes):
    fields = {"transform": _encode, "collate": _pad, "batch_size": batch_size, **changes}
    return accel.Pipeline(model=TokenEncoder(), source=[list(range(1, n + 1)) for n in lengths], **fields)


@pytest.mark.parametrize("left", [False, True])
def test_run_trims_per_position_outputs_to_each_samples_real_tokens(left):
    lengths = [3, WIDTH, 1, 6]  # the second batch pads to WIDTH: the pooled vector stays whole
    pipeline = _token_pipeline(lengths, 2, collate=lambda s: _pad(s, left=left))
    results = pipeline.run()
    for n, result in zip(lengths, results):
        assert result["last_hidden_state"].shape == (n, WIDTH)
        assert torch.equal(result["last_hidden_state"][:, 0], torch.arange(1.0, n + 1))
        assert result["pooler_output"].shape == (WIDTH,)


@settings(max_examples=30, deadline=None)
@given(lengths=st.lists(st.integers(1, 12), min_size=1, max_size=20), batch_size=st.integers(1, 6))
def test_any_batch_plan_gives_the_one_sample_results(lengths, batch_size):
    alone = _token_pipeline(lengths, 1).run()
    reversed_plan = _token_pipeline(
        lengths,
        batch_size,
        batch_plan=lambda p: [
            list(range(len(lengths)))[::-1][i : i + batch_size] for i in range(0, len(lengths), batch_size)
        ],
    ).run()
    for a, b in zip(alone, reversed_plan):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_outputs_are_left_alone_with_a_postprocess_or_without_a_mask():
    kept = _token_pipeline([2, 5], 2, postprocess=lambda out: out["last_hidden_state"].shape[0]).run()
    assert kept == [5, 5]  # the user's postprocess sees the batch's padded output, as written
    no_mask = accel.Pipeline(
        model=lambda input_ids: {"h": input_ids.float().unsqueeze(-1)},
        source=[[1, 2], [1, 2, 3, 4]],
        transform=lambda t: {"input_ids": torch.tensor(t)},
        collate=lambda s: {"input_ids": torch.nn.utils.rnn.pad_sequence([x["input_ids"] for x in s], batch_first=True)},
        batch_size=2,
    ).run()
    assert [r["h"].shape[0] for r in no_mask] == [4, 4]
