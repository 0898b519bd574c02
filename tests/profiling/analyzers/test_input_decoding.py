"""input_decoding: decode is the loader's most expensive stage and takes its part of the wait."""

from __future__ import annotations

import pytest

from accel.profiling.analyzers import analyze
from tests.profiling.analyzers.recorded import (
    DATA_KINDS,
    assert_planted_bottleneck_is_primary,
    loader_machine,
    profile_data_path,
    recorded,
)


def test_decode_split_never_counts_the_wait_twice():
    report = profile_data_path("data_decode_bound")
    wait_share = report.extra["end_to_end"]["wait_share"]
    decoding, loading = report.finding("input_decoding"), report.finding("data_loading")
    assert decoding.share + loading.share == pytest.approx(wait_share, rel=1e-6)
    assert decoding.share > 5 * loading.share
    assert sum(f.share for f in report.findings if f.kind in DATA_KINDS) <= 1.0 + 1e-9
    assert "ms per sample" in decoding.summary


def test_decode_takes_its_part_of_wait_and_saving():
    data = recorded(6.0, 2.0, 2.0)
    findings = {f.kind: f for f in analyze(data, loader_machine(4), ["data_loading", "input_decoding"])}
    assert findings["input_decoding"].share == pytest.approx(0.8 * 0.75, rel=1e-6)
    assert findings["data_loading"].share == pytest.approx(0.8 * 0.25, rel=1e-6)
    total_impact = findings["input_decoding"].impact + findings["data_loading"].impact
    assert total_impact == pytest.approx(0.8, rel=1e-6)


def test_cache_beats_workers_when_decode_dominates_and_workers_are_maxed():
    data = recorded(9.0, 0.5, 0.5, workers=4)
    (decoding,) = analyze(data, loader_machine(4), ["input_decoding"])
    assert decoding.recommendations == ["cache.decoded"]


def test_planted_decode_bound_is_primary():
    assert_planted_bottleneck_is_primary("data_decode_bound", "input_decoding")


def test_a_loader_without_decode_has_no_input_decoding_finding():
    assert analyze(recorded(0.0, 8.0, 2.0), loader_machine(4), ["input_decoding"]) == []
