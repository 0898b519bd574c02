"""data_loading: a slow loader makes the model wait; the rate model predicts the workers' saving."""

from __future__ import annotations

import pytest

from accel.profiling.analyzers import analyze
from tests.profiling.analyzers.recorded import (
    assert_planted_bottleneck_is_primary,
    loader_machine,
    profile_data_path,
    recorded,
)


def _cut_by_contention(report) -> bool:
    """Other work held the cores the workers would use, so the prediction came from the idle ones:
    the finding then says "too noisy to decide" and gives the quiet machine's prediction beside it."""
    finding = report.finding("data_loading")
    quiet = finding.evidence.get("predicted_saving_on_a_quiet_machine")
    if quiet is None:
        return False
    assert report.extra["contention"]["idle_cores"] < report.extra["contention"]["cores"]
    assert quiet > finding.impact and "too noisy to decide" in finding.summary
    assert report.primary in ("data_loading", "none"), [(f.kind, f.severity) for f in report.findings]
    return True


def test_slow_loader_names_its_stage_and_no_decoding():
    report = profile_data_path("data_slow_loading")
    assert report.finding("input_decoding") is None
    evidence = report.finding("data_loading").evidence
    assert evidence["limiting_stage"] == "transform"
    assert evidence["loader_samples_per_s"] < evidence["model_samples_per_s"]
    if _cut_by_contention(report):
        assert evidence["predicted_saving_on_a_quiet_machine"] > 0.2
    else:
        assert "loader.tune" in report.finding("data_loading").recommendations


def test_rate_model_predicts_workers_on_the_machines_cores():
    # 8 ms of transform and 2 ms of model per sample, serial: 10 ms. Four workers on four cores
    # (a GPU machine, so no contention): max(2, 8 / 4) = 2 ms, a saving of 80%, the whole wait.
    findings = analyze(recorded(0.0, 8.0, 2.0), loader_machine(4), ["data_loading"])
    (finding,) = findings
    assert finding.impact == pytest.approx(0.8, rel=1e-6)
    assert finding.share == pytest.approx(0.8, rel=1e-6)
    assert finding.severity == "high"
    assert finding.evidence["limiting_stage"] == "transform"
    assert finding.recommendations[0] == "loader.tune"


def test_rate_model_on_cpu_charges_the_workers_to_the_models_cores():
    # On CPU the workers share the cores with the model: at least 2 + 8 / 4 = 4 ms, a 60% saving.
    (finding,) = analyze(recorded(0.0, 8.0, 2.0), loader_machine(4, "cpu"), ["data_loading"])
    assert finding.impact == pytest.approx(0.6, rel=1e-6)


def test_a_stream_that_is_read_once_gets_no_cache_recommendation():
    data = recorded(9.0, 0.5, 0.5, sequence=False)
    (loading,) = analyze(data, loader_machine(4), ["data_loading"])
    assert "cache.decoded" not in loading.recommendations


def test_planted_slow_loading_is_primary():
    report = profile_data_path("data_slow_loading")
    if not _cut_by_contention(report):  # a quiet machine: the cure's prediction stands
        assert_planted_bottleneck_is_primary("data_slow_loading", "data_loading")


def test_a_loop_that_never_waits_for_data_has_nothing_to_cure():
    findings = analyze(recorded(0.0, 0.0, 10.0), loader_machine(), ["data_loading"])
    assert all(f.severity == "info" and f.impact == 0.0 and not f.recommendations for f in findings)
