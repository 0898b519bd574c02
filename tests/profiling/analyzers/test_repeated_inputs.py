"""repeated_inputs: a stream of repeated model inputs, and the result cache's prediction."""

from __future__ import annotations

import pytest

from accel.profiling.analyzers import analyze
from accel.profiling.data import BatchPadding
from tests.profiling.analyzers.recorded import assert_planted_bottleneck_is_primary, loader_machine, recorded


def test_padding_and_repeats_on_recorded_data():
    data = recorded(0.0, 0.0, 10.0)
    data.padding = [
        BatchPadding(real_elements=10 + 10 + 10 + 100, padded_elements=400, sample_lengths=(10, 10, 10, 100)),
        BatchPadding(real_elements=10 + 10 + 10 + 100, padded_elements=400, sample_lengths=(10, 100, 10, 10)),
    ]
    data.batch_size = 4
    data.sample_hashes = ["a", "b", "a", "a", "c", "a", "a", "a"]
    findings = {f.kind: f for f in analyze(data, loader_machine(), ["padding", "repeated_inputs"])}
    padding = findings["padding"]
    assert padding.evidence["padding_share"] == pytest.approx(1 - 260 / 800)
    # Bucketed: [10,10,10,10] and [10,10,100,100] -> 40 + 400 elements instead of 800.
    assert padding.impact == pytest.approx(1 - 440 / 800)
    repeats = findings["repeated_inputs"]
    assert repeats.evidence["repeat_fraction"] == pytest.approx(5 / 8)
    assert repeats.impact == pytest.approx(5 / 8)
    assert padding.share + repeats.share <= 1.0


def test_planted_repeats_are_primary():
    assert_planted_bottleneck_is_primary("data_repeats", "repeated_inputs")


def test_distinct_inputs_have_no_repeated_inputs_finding():
    data = recorded(0.0, 0.0, 10.0)
    data.sample_hashes = [str(i) for i in range(8)]
    assert analyze(data, loader_machine(), ["repeated_inputs"]) == []
