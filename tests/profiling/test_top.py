"""The top layers and ops: read from the cost pass's groups, each with its roof and its cure."""

from __future__ import annotations

import pytest

import accel  # noqa: F401  (registers the analyzers, so every finding kind is known)
from accel.profiling.report import finding_kinds
from accel.profiling.top import CURE_FINDING, format_rate, group_rates, top_groups


def group(name, seconds, *, flops, bytes_moved, roofline_seconds, memory_bound_seconds=0.0, calls=1):
    return {
        "name": name,
        "calls": calls,
        "flops": flops,
        "bytes_moved": bytes_moved,
        "weight_bytes": 0,
        "seconds": seconds,
        "roofline_seconds": roofline_seconds,
        "memory_bound_seconds": memory_bound_seconds,
    }


def report(**extra):
    return {
        "cost": {"call_seconds": 0.02},
        "layers": [
            group("small", 0.001, flops=10**6, bytes_moved=10**6, roofline_seconds=1e-4, memory_bound_seconds=0.001),
            group("encoder.intermediate.dense", 0.016, flops=10**10, bytes_moved=10**8, roofline_seconds=0.004),
            group("fast", 0.002, flops=10**6, bytes_moved=10**8, roofline_seconds=0.004, memory_bound_seconds=0.002),
            group("view", 0.0, flops=0, bytes_moved=0, roofline_seconds=0.0),
        ],
        "ops": [
            group("aten::relu", 0.0005, flops=10**3, bytes_moved=10**4, roofline_seconds=1e-7, calls=10),
        ],
        "findings": [
            {"kind": "compute_bound", "recommendations": ["precision.bf16", "quantize.int8_dynamic"]},
            {"kind": "overhead", "recommendations": ["compile.inductor"]},
        ],
        **extra,
    }


def test_rows_are_the_slowest_first_with_their_share_of_the_call():
    rows = group_rates(report(), "layers")
    assert [r.name for r in rows] == ["encoder.intermediate.dense", "fast", "small"]  # no time, no row
    assert rows[0].share == pytest.approx(0.8)
    assert [r.name for r in top_groups(report(), "layers", 2)] == ["encoder.intermediate.dense", "fast"]


def test_each_row_has_the_roof_and_the_cure_of_what_limits_it():
    rows = {r.name: r for r in group_rates(report(), "layers")}
    dense = rows["encoder.intermediate.dense"]
    assert dense.bound == "compute" and dense.rate_unit == "GFLOP/s"
    assert dense.achieved_gflops == pytest.approx(625.0)
    assert dense.roof_rate == pytest.approx(2500.0) and dense.roof_fraction == pytest.approx(0.25)
    assert dense.cures == ("precision.bf16", "quantize.int8_dynamic") and dense.cure_kind == "compute_bound"
    assert dense.cure_text == "precision.bf16 +1" and dense.achieved_text == "625 GFLOP/s 25%"
    small = rows["small"]
    assert small.bound == "bandwidth" and small.roof_text == "bandwidth 10.0 GB/s"
    assert small.cures == () and small.cure_text == "-"  # no memory_bandwidth finding was reported
    relu = group_rates(report(), "ops")[0]
    assert relu.dispatch_bound and relu.cure_kind == "overhead" and "dispatch-bound" in relu.roof_text


def test_a_group_measured_faster_than_its_roof_is_flagged():
    rows = {r.name: r for r in group_rates(report(), "layers")}
    assert rows["fast"].above_roof and rows["fast"].achieved_text.endswith("!")
    assert not rows["encoder.intermediate.dense"].above_roof


def test_without_a_cost_pass_there_are_no_rows():
    assert group_rates({"mode": "script", "findings": []}, "layers") == []
    with pytest.raises(ValueError, match="valid: layers, ops"):
        group_rates(report(), "modules")


def test_every_cure_finding_is_a_registered_finding_kind():
    assert set(CURE_FINDING.values()) <= set(finding_kinds())


@pytest.mark.parametrize(
    "value, text", [(1234.5, "1,234"), (185.0, "185"), (27.94, "27.9"), (4.406, "4.41"), (0.1611, "0.161")]
)
def test_rates_read_with_three_significant_figures(value, text):
    assert format_rate(value) == text
