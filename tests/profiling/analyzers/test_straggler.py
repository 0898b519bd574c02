"""straggler: the rank the others wait for at collectives, and its cause (recorded timelines)."""

from __future__ import annotations

import pytest

from accel.profiling.ranks import JobTimeline
from tests.profiling.analyzers.recorded import job_report, rank_timeline


def test_input_straggler_is_named_with_its_cause():
    # Rank 1 waits 40 ms for data, rank 0 2 ms: rank 0 is blocked 38 ms more at the all-reduce.
    job = JobTimeline(
        (rank_timeline(0, 0.002, 0.02, 0.005, 0.038), rank_timeline(1, 0.040, 0.02, 0.005, 0.0)), source="test"
    )
    finding = job_report(job).finding("straggler")
    assert finding.evidence["rank"] == 1 and finding.evidence["cause"] == "data_loading"
    assert finding.evidence["arrived_last_share"] == 1.0
    assert finding.evidence["wait_share_by_rank"]["0"] == pytest.approx(0.38, abs=0.01)
    assert finding.severity in ("medium", "high")
    assert finding.recommendations and "loader.tune" in finding.recommendations


def test_compute_straggler_and_an_unattributed_one():
    compute = JobTimeline(
        (rank_timeline(0, 0.002, 0.01, 0.005, 0.03), rank_timeline(1, 0.002, 0.04, 0.005, 0.0)), source="test"
    )
    assert job_report(compute).finding("straggler").evidence["cause"] == "compute_bound"
    # Half the lag from data, half from compute: neither explains 80%.
    mixed = JobTimeline(
        (rank_timeline(0, 0.002, 0.01, 0.005, 0.03), rank_timeline(1, 0.017, 0.025, 0.005, 0.0)), source="test"
    )
    finding = job_report(mixed).finding("straggler")
    assert finding.evidence["cause"] == "unattributed" and finding.recommendations == []
    assert "unattributed" in finding.summary


def test_balanced_ranks_have_no_straggler_above_low():
    job = JobTimeline(
        (rank_timeline(0, 0.002, 0.02, 0.005, 0.0005), rank_timeline(1, 0.002, 0.02, 0.005, 0.0)), source="test"
    )
    report = job_report(job)
    assert report.finding("straggler").severity in ("low", "info")
    assert report.primary != "straggler"
