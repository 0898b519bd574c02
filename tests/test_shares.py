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
def test_shares_of_a_profile_add_up(planted, tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("ACCEL_CACHE_DIR", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    report = accel.profile(f"tests/planted/{planted}", budget_seconds=5.0)
    total = sum(f.share for f in report.findings if f.kind in TIME_KINDS)
    assert total <= 1.0 + 1e-6, [(f.kind, f.share) for f in report.findings]
