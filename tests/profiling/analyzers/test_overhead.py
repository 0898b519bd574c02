"""overhead: many tiny ops take far longer than their roofline time; long ops near it are not named."""

from __future__ import annotations

from accel.profiling.data import ProfileData
from tests.profiling.analyzers.recorded import cost, fake_machine, kinds, op, profile_hardware


def test_many_tiny_ops_are_overhead(machine):
    report = profile_hardware("tiny_ops", machine)
    assert report.primary == "overhead"
    finding = report.finding("overhead")
    assert finding.evidence["op_count_per_call"] >= 200
    assert finding.evidence["median_op_seconds"] > 4 * finding.evidence["median_op_roofline_seconds"]
    assert "onnx.runtime" in finding.recommendations


def test_tiny_ops_far_above_their_roofline_are_overhead():
    ops = [op(name="aten::add", flops=1000, bytes_moved=4000, seconds=20e-6) for _ in range(300)]
    found = kinds(ProfileData(target="t", ops=cost(*ops)), fake_machine())
    assert found["overhead"].evidence["op_count_per_call"] == 300
    assert found["overhead"].recommendations == ["onnx.runtime", "compile", "batch.size"]
    onnx = kinds(ProfileData(target="t", mode="onnx", ops=cost(*ops)), fake_machine())
    assert onnx["overhead"].recommendations == ["batch.size"]  # already in a graph runtime


def test_a_long_op_near_its_roofline_is_not_overhead():
    data = ProfileData(target="t", ops=cost(op(name="aten::mm", flops=2 * 10**10, bytes_moved=10**7, seconds=0.1)))
    assert "overhead" not in kinds(data, fake_machine())
