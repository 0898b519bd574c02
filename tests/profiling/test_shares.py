"""Shares of different findings never count the same time twice (issue 2, section 4)."""

import pytest

import accel
from accel.profiling.analyzers import without_double_counting
from accel.profiling.report import Finding

# memory_peak describes bytes, not time: it is left out of the time accounting.
TIME_KINDS = {
    "data_loading",
    "input_decoding",
    "padding",
    "repeated_inputs",
    "memory_bandwidth",
    "compute_bound",
    "overhead",
    "generation",
}


def _finding(kind, share, model_share=0.8):
    return Finding.from_impact(
        kind, share=share, impact=share / 2, summary=kind, evidence={"model_time_share": model_share}
    )


def test_op_classes_shrink_to_the_model_time_causes_leave():
    findings = [
        _finding("padding", 0.4),
        _finding("repeated_inputs", 0.2),
        _finding("compute_bound", 0.6),
        _finding("overhead", 0.2),
    ]
    fixed = {f.kind: f for f in without_double_counting(findings)}
    # causes explain 0.6 of the 0.8 model share: a quarter of the model time is left for op classes
    assert fixed["compute_bound"].share == pytest.approx(0.15)
    assert fixed["overhead"].share == pytest.approx(0.05)
    assert fixed["compute_bound"].impact == findings[2].impact
    assert fixed["padding"].share == 0.4
    assert sum(f.share for f in fixed.values()) <= 0.8 + 1e-9


def test_without_causes_nothing_changes():
    findings = [_finding("compute_bound", 0.6), _finding("overhead", 0.2)]
    assert without_double_counting(findings) == findings


@pytest.mark.slow
@pytest.mark.parametrize("planted", ["data_padded.py", "data_repeats.py"])
def test_shares_of_a_profile_add_up(planted, machine):
    # the module's one calibration (a fresh cache per test recalibrated, about 10 s each)
    report = accel.profile(f"tests/planted/{planted}", machine=machine, budget_seconds=5.0)
    total = sum(f.share for f in report.findings if f.kind in TIME_KINDS)
    assert total <= 1.0 + 1e-6, [(f.kind, f.share) for f in report.findings]


def test_op_class_cures_compose_after_the_causes_cures():
    padding = Finding.from_impact(
        "padding",
        share=0.6,
        impact=0.6,
        summary="padding",
        evidence={"model_time_share": 0.9},
        recommendations=["batch.bucket"],
    )
    compute = Finding.from_impact(
        "compute_bound",
        share=0.8,
        impact=0.5,
        summary="compute-bound",
        evidence={"model_time_share": 0.9},
        recommendations=["precision.bf16"],
    )
    fixed = {f.kind: f for f in without_double_counting([padding, compute])}
    composed = fixed["compute_bound"].evidence["composition"]
    # bucketing leaves 0.9 - 0.6 of the time in the model; bf16 saves its 0.5 / 0.9 of that
    assert composed["after"] == ["batch.bucket"]
    assert composed["impact_after_causes"] == pytest.approx(0.5 * (1 - 0.6 / 0.9))
    assert composed["combined_impact"] == pytest.approx(0.6 + 0.5 * (1 - 0.6 / 0.9))
    assert "after batch.bucket (60%), precision.bf16 on what is left saves 17% more (77% together)" in (
        fixed["compute_bound"].summary
    )
    assert fixed["compute_bound"].impact == 0.5  # its saving on its own is kept for ranking


def test_every_finding_names_its_predicted_saving_and_optimize_prints_it():
    from io import StringIO

    from rich.console import Console

    from accel.cli.optimize import steps_table
    from accel.core.machine import describe_machine
    from accel.optimizing.run import predicted_speedups
    from accel.profiling.analyzers import with_predicted_saving
    from accel.profiling.report import Report

    overhead = with_predicted_saving(
        Finding.from_impact("overhead", share=0.5, impact=0.5, summary="o", recommendations=["onnx.runtime", "compile"])
    )
    assert overhead.evidence["predicted_saving"] == {"onnx.runtime": 0.5}
    padding = with_predicted_saving(_finding("padding", 0.4))
    assert padding.evidence["predicted_saving"] == {}  # no cure recommended, nothing predicted
    report = Report(target="t", machine=describe_machine(), stages=[], samples_per_s=1.0, findings=[overhead])
    predicted = predicted_speedups(report)
    assert predicted == {"onnx.runtime": pytest.approx(2.0)}
    step = {
        "optimizer": "onnx.runtime",
        "speedup": 1.8,
        "speedup_ci": [1.7, 1.9],
        "fidelity": None,
        "setup_seconds": 0.1,
        "verdict": "accepted",
        "reason": "faster",
    }
    data = {"recipe": "r", "objective": "latency", "threads": 1, "steps": [step], "predicted_speedup": predicted}
    out = StringIO()
    Console(file=out, width=120, color_system=None).print(steps_table(data))
    assert "predicted" in out.getvalue() and "2.00x" in out.getvalue() and "1.80x" in out.getvalue()
