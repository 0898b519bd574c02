"""The data path together: a well-fed pipeline, the measured padding and start-up, strict JSON evidence.

Each data-path analyzer's own tests are in tests/profiling/analyzers/test_<kind>.py."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import accel
from accel.profiling.analyzers import ANALYZERS, analyze
from accel.profiling.data import EndToEnd, ProfileData, StageTiming
from tests.profiling.analyzers.recorded import DATA_KINDS, PLANTED, loader_machine, profile_data_path, recorded


@pytest.fixture(autouse=True)
def _one_thread():
    # Two intra-op threads on a busy 2-core machine spin against other processes and make a 0.5 ms
    # step take 100 ms; one thread keeps the planted ratios stable (conftest restores the count).
    torch.set_num_threads(1)


def test_well_fed_pipeline_has_no_data_path_finding_above_low():
    report = profile_data_path("data_well_fed")
    serious = [f for f in report.findings if f.kind in DATA_KINDS and f.severity in ("high", "medium")]
    assert serious == []
    assert report.primary not in DATA_KINDS


# --- the analyzers on recorded measurements (pure: no timing) -----------------------------------


def test_inputs_only_pipeline_has_no_data_path_findings():
    data = ProfileData(
        target="inputs",
        stages=[StageTiming("model", 0.01, 1)],
        end_to_end=EndToEnd(seconds=0.01, samples=1, batches=1, wait_seconds=0.0, compute_seconds=0.01, num_workers=0),
    )
    assert analyze(data, loader_machine(), list(DATA_KINDS)) == []


def test_every_data_path_analyzer_is_registered():
    for kind in DATA_KINDS:
        assert kind in ANALYZERS


def test_worker_start_up_is_kept_out_of_the_steady_state():
    pipeline = accel.load(PLANTED / "data_slow_loading.py").replace(num_workers=2)
    report = accel.profile(pipeline, budget_seconds=3.0)
    e2e = report.extra["end_to_end"]
    assert e2e["num_workers"] == 2
    assert e2e["startup_seconds"] > 0
    assert e2e["wait_seconds"] + e2e["compute_seconds"] <= e2e["seconds"] * (1 + 1e-9)
    assert report.finding("data_loading").evidence["num_workers"] == 2


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=12), st.integers(1, 8))
def test_measured_padding_matches_the_lengths(lengths, width):
    from accel.profiling.stages import measure_padding

    samples = [torch.ones(n, width) for n in lengths]
    batch = torch.zeros(len(lengths), max(lengths), width)
    padding = measure_padding(samples, batch)
    assert padding.sample_lengths == tuple(lengths)
    assert padding.padding_share == pytest.approx(1 - sum(lengths) / (len(lengths) * max(lengths)))


def test_evidence_is_strict_json_when_a_stage_costs_nothing():
    import json

    data = recorded(0.0, 0.0, 0.0)
    data.end_to_end = EndToEnd(seconds=1.0, samples=10, batches=2, wait_seconds=0.5, compute_seconds=0.0, num_workers=0)
    for finding in analyze(data, loader_machine(), list(DATA_KINDS)):
        json.dumps(finding.evidence, allow_nan=False)
