"""Data-path analyzers: planted bottlenecks come out primary; the rate model and the split add up."""

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import accel
from accel.core.machine import Machine
from accel.profiling.analyzers import ANALYZERS, analyze
from accel.profiling.analyzers.padding import bucketed_elements
from accel.profiling.data import BatchPadding, EndToEnd, ProfileData, StageTiming

PLANTED = Path(__file__).parent / "planted"
DATA_KINDS = ("data_loading", "input_decoding", "padding", "repeated_inputs")


@pytest.fixture(autouse=True)
def _one_thread():
    # Two intra-op threads on a busy 2-core machine spin against other processes and make a 0.5 ms
    # step take 100 ms; one thread keeps the planted ratios stable (conftest restores the count).
    torch.set_num_threads(1)


def profile(name: str):
    return accel.profile(PLANTED / f"{name}.py", budget_seconds=3.0)


@pytest.mark.parametrize(
    "name, kind",
    [
        ("data_slow_loading", "data_loading"),
        ("data_decode_bound", "input_decoding"),
        ("data_padded", "padding"),
        ("data_repeats", "repeated_inputs"),
    ],
)
def test_planted_bottleneck_is_primary(name, kind):
    report = profile(name)
    assert report.primary == kind, [(f.kind, f.severity, f.impact) for f in report.findings]
    finding = report.finding(kind)
    assert finding.severity in ("high", "medium")
    assert finding.recommendations
    assert finding.evidence["predicted_saving"]
    assert abs(sum(s.share for s in report.stages) - 1.0) < 1e-6


def test_well_fed_pipeline_has_no_data_path_finding_above_low():
    report = profile("data_well_fed")
    serious = [f for f in report.findings if f.kind in DATA_KINDS and f.severity in ("high", "medium")]
    assert serious == []
    assert report.primary not in DATA_KINDS


def test_decode_split_never_counts_the_wait_twice():
    report = profile("data_decode_bound")
    wait_share = report.extra["end_to_end"]["wait_share"]
    decoding, loading = report.finding("input_decoding"), report.finding("data_loading")
    assert decoding.share + loading.share == pytest.approx(wait_share, rel=1e-6)
    assert decoding.share > 5 * loading.share
    assert sum(f.share for f in report.findings if f.kind in DATA_KINDS) <= 1.0 + 1e-9
    assert "ms per sample" in decoding.summary


def test_slow_loader_names_its_stage_and_no_decoding():
    report = profile("data_slow_loading")
    assert report.finding("input_decoding") is None
    evidence = report.finding("data_loading").evidence
    assert evidence["limiting_stage"] == "transform"
    assert evidence["loader_samples_per_s"] < evidence["model_samples_per_s"]
    assert "loader.tune" in report.finding("data_loading").recommendations


# --- the analyzers on recorded measurements (pure: no timing) -----------------------------------


def machine(cores: int = 4, device: str = "cuda:0") -> Machine:
    return Machine(device=device, device_name="test", cores=cores, threads=cores, torch_version="x", accel_version="x")


def recorded(
    decode_ms: float,
    transform_ms: float,
    model_ms: float,
    *,
    workers: int = 0,
    samples: int = 100,
    sequence: bool = True,
) -> ProfileData:
    per_sample = {"decode": decode_ms, "transform": transform_ms, "collate": 0.0, "model": model_ms}
    load = decode_ms + transform_ms
    wall = (load + model_ms) if workers == 0 else max(load / workers, model_ms)
    wait = wall - model_ms
    return ProfileData(
        target="recorded",
        cores=4,
        num_workers=workers,
        source_is_sequence=sequence,
        stages=[StageTiming(name, ms * samples / 1e3, samples) for name, ms in per_sample.items()],
        end_to_end=EndToEnd(
            seconds=wall * samples / 1e3,
            samples=samples,
            batches=10,
            wait_seconds=wait * samples / 1e3,
            compute_seconds=model_ms * samples / 1e3,
            num_workers=workers,
        ),
    )


def test_rate_model_predicts_workers_on_the_machines_cores():
    # 8 ms of transform and 2 ms of model per sample, serial: 10 ms. Four workers on four cores
    # (a GPU machine, so no contention): max(2, 8 / 4) = 2 ms, a saving of 80%, the whole wait.
    findings = analyze(recorded(0.0, 8.0, 2.0), machine(4), ["data_loading"])
    (finding,) = findings
    assert finding.impact == pytest.approx(0.8, rel=1e-6)
    assert finding.share == pytest.approx(0.8, rel=1e-6)
    assert finding.severity == "high"
    assert finding.evidence["limiting_stage"] == "transform"
    assert finding.recommendations[0] == "loader.tune"


def test_rate_model_on_cpu_charges_the_workers_to_the_models_cores():
    # On CPU the workers share the cores with the model: at least 2 + 8 / 4 = 4 ms, a 60% saving.
    (finding,) = analyze(recorded(0.0, 8.0, 2.0), machine(4, "cpu"), ["data_loading"])
    assert finding.impact == pytest.approx(0.6, rel=1e-6)


def test_decode_takes_its_part_of_wait_and_saving():
    data = recorded(6.0, 2.0, 2.0)
    findings = {f.kind: f for f in analyze(data, machine(4), ["data_loading", "input_decoding"])}
    assert findings["input_decoding"].share == pytest.approx(0.8 * 0.75, rel=1e-6)
    assert findings["data_loading"].share == pytest.approx(0.8 * 0.25, rel=1e-6)
    total_impact = findings["input_decoding"].impact + findings["data_loading"].impact
    assert total_impact == pytest.approx(0.8, rel=1e-6)


def test_cache_beats_workers_when_decode_dominates_and_workers_are_maxed():
    data = recorded(9.0, 0.5, 0.5, workers=4)
    (decoding,) = analyze(data, machine(4), ["input_decoding"])
    assert decoding.recommendations == ["cache.decoded"]


def test_a_stream_that_is_read_once_gets_no_cache_recommendation():
    data = recorded(9.0, 0.5, 0.5, sequence=False)
    (loading,) = analyze(data, machine(4), ["data_loading"])
    assert "cache.decoded" not in loading.recommendations


def test_inputs_only_pipeline_has_no_data_path_findings():
    data = ProfileData(
        target="inputs",
        stages=[StageTiming("model", 0.01, 1)],
        end_to_end=EndToEnd(seconds=0.01, samples=1, batches=1, wait_seconds=0.0, compute_seconds=0.01, num_workers=0),
    )
    assert analyze(data, machine(), list(DATA_KINDS)) == []


def test_padding_and_repeats_on_recorded_data():
    data = recorded(0.0, 0.0, 10.0)
    data.padding = [
        BatchPadding(real_elements=10 + 10 + 10 + 100, padded_elements=400, sample_lengths=(10, 10, 10, 100)),
        BatchPadding(real_elements=10 + 10 + 10 + 100, padded_elements=400, sample_lengths=(10, 100, 10, 10)),
    ]
    data.batch_size = 4
    data.sample_hashes = ["a", "b", "a", "a", "c", "a", "a", "a"]
    findings = {f.kind: f for f in analyze(data, machine(), ["padding", "repeated_inputs"])}
    padding = findings["padding"]
    assert padding.evidence["padding_share"] == pytest.approx(1 - 260 / 800)
    # Bucketed: [10,10,10,10] and [10,10,100,100] -> 40 + 400 elements instead of 800.
    assert padding.impact == pytest.approx(1 - 440 / 800)
    repeats = findings["repeated_inputs"]
    assert repeats.evidence["repeat_fraction"] == pytest.approx(5 / 8)
    assert repeats.impact == pytest.approx(5 / 8)
    assert padding.share + repeats.share <= 1.0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=512), min_size=1, max_size=64), st.integers(1, 16))
def test_bucketing_never_adds_padding(lengths, batch_size):
    arrival = sum(
        max(lengths[i : i + batch_size]) * len(lengths[i : i + batch_size]) for i in range(0, len(lengths), batch_size)
    )
    bucketed = bucketed_elements(lengths, batch_size, 1.0)
    assert sum(lengths) <= bucketed <= arrival


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
    for finding in analyze(data, machine(), list(DATA_KINDS)):
        json.dumps(finding.evidence, allow_nan=False)
