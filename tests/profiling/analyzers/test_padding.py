"""padding: a padded stream of ragged samples, and the bucketing prediction."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accel.profiling.analyzers import analyze
from accel.profiling.analyzers.padding import bucketed_elements
from accel.profiling.data import BatchPadding, ProfileData
from tests.profiling.analyzers.recorded import assert_planted_bottleneck_is_primary, loader_machine, recorded


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=512), min_size=1, max_size=64), st.integers(1, 16))
def test_bucketing_never_adds_padding(lengths, batch_size):
    arrival = sum(
        max(lengths[i : i + batch_size]) * len(lengths[i : i + batch_size]) for i in range(0, len(lengths), batch_size)
    )
    bucketed = bucketed_elements(lengths, batch_size, 1.0)
    assert sum(lengths) <= bucketed <= arrival


def test_planted_padded_stream_is_primary():
    assert_planted_bottleneck_is_primary("data_padded", "padding")


def _padded(*batches: tuple[int, ...]) -> ProfileData:
    data = recorded(0.0, 0.0, 10.0)
    data.batch_size = len(batches[0])
    data.padding = [
        BatchPadding(real_elements=sum(lengths), padded_elements=len(lengths) * max(lengths), sample_lengths=lengths)
        for lengths in batches
    ]
    return data


def test_bucketing_prediction_on_recorded_lengths():
    (padding,) = analyze(_padded((10, 10, 10, 100), (10, 100, 10, 10)), loader_machine(), ["padding"])
    assert padding.evidence["padding_share"] == pytest.approx(1 - 260 / 800)
    # Bucketed: [10,10,10,10] and [10,10,100,100] -> 40 + 400 elements instead of 800.
    assert padding.impact == pytest.approx(1 - 440 / 800)
    assert padding.recommendations == ["batch.bucket"]


def test_batches_of_equal_lengths_have_no_padding_finding():
    assert analyze(_padded((16, 16, 16, 16), (32, 32, 32, 32)), loader_machine(), ["padding"]) == []
