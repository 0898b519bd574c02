"""batch.size on samples torch's default collate cannot stack is not applicable, and says why,
instead of failing inside its scan with "stack expects each tensor to be equal size"."""

from __future__ import annotations

import torch

import accel
from accel.core.machine import describe_machine
from accel.optimizing.optimizers import OPTIMIZERS, Context


def _context(tmp_path):
    return Context(machine=describe_machine(), workdir=tmp_path)


def _lengths_pipeline(lengths, **options) -> accel.Pipeline:
    return accel.Pipeline(
        model=torch.nn.Embedding(50, 4),
        source=[[1 + i % 40 for i in range(n)] for n in lengths],
        transform=lambda tokens: torch.tensor(tokens),
        **options,
    )


def test_variable_length_samples_under_the_default_collate_say_why(tmp_path):
    optimizer = OPTIMIZERS.get("batch.size")
    reason = optimizer.applicable(_lengths_pipeline([3, 7, 5, 9]), _context(tmp_path))
    assert reason is not None
    assert "default collate" in reason and "pads" in reason and "equal size" in reason


def test_equal_shapes_or_a_padding_collate_stay_applicable(tmp_path):
    optimizer = OPTIMIZERS.get("batch.size")
    assert optimizer.applicable(_lengths_pipeline([6, 6, 6]), _context(tmp_path)) is None

    def pad(samples):
        return torch.nn.utils.rnn.pad_sequence(samples, batch_first=True)

    assert optimizer.applicable(_lengths_pipeline([3, 7, 5], collate=pad), _context(tmp_path)) is None
    streamed = _lengths_pipeline([3, 7]).replace(source=IterSource([[1, 2], [1, 2, 3]]))
    assert "default collate" in optimizer.applicable(streamed, _context(tmp_path))


class IterSource:
    """An iterable source without len(): read through iter()."""

    def __init__(self, samples):
        self.samples = samples

    def __iter__(self):
        return iter(self.samples)
