"""compute_bound: a large-batch conv net runs above the ridge; the prediction comes from the measured call."""

from __future__ import annotations

import pytest

from accel.profiling.analyzers import analyze
from accel.profiling.data import DtypeTiming, ProfileData
from tests.profiling.analyzers.recorded import HARDWARE_KINDS, cost, fake_machine, kinds, op, profile_hardware


@pytest.mark.slow
def test_large_batch_conv_net_is_compute_bound_not_memory_bandwidth(machine):
    report = profile_hardware("conv_net", machine)
    compute = report.finding("compute_bound")
    assert compute is not None
    memory = report.finding("memory_bandwidth")
    assert memory is None or memory.impact < compute.impact
    faster = compute.evidence["faster_units_speedup"]
    if faster:  # this device has faster units (bf16 AMX/AVX512-BF16): the cure is worth a medium or more
        assert report.primary == "compute_bound"
        assert compute.recommendations[0] in ("precision.bf16", "precision.fp16", "quantize.int8_dynamic")
    else:
        assert compute.severity == "low"


def test_compute_bound_severity_follows_faster_units():
    conv = dict(name="aten::convolution", flops=10**10, bytes_moved=10**7, seconds=0.1)
    without = kinds(ProfileData(target="t", ops=cost(op(**conv))), fake_machine(fp16=2.0))["compute_bound"]
    assert without.severity == "low" and without.recommendations == ["batch.size"]
    faster = fake_machine(bf16=600.0, int8=800.0)
    found = kinds(ProfileData(target="t", ops=cost(op(machine=faster, **conv))), faster)["compute_bound"]
    assert found.recommendations == ["precision.bf16"]  # int8 dynamic quantization covers Linear only
    assert found.impact == pytest.approx(1 - 1 / 3, rel=0.01)
    onnx = ProfileData(target="t", mode="onnx", ops=cost(op(machine=faster, **conv)))
    assert kinds(onnx, faster)["compute_bound"].severity == "low"  # no bf16 cure inside ONNX Runtime


def test_model_near_its_roofline_with_nothing_to_cure_gets_no_finding_above_low():
    machine = fake_machine()
    data = ProfileData(target="t", ops=cost(op(name="aten::mm", flops=2 * 10**10, bytes_moved=10**7, seconds=0.1)))
    assert all(f.severity in ("low", "info") for f in analyze(data, machine, names=list(HARDWARE_KINDS)))


def test_compute_bound_predicts_from_the_measured_call_not_the_peak_ratio():
    conv = dict(name="aten::convolution", flops=10**10, bytes_moved=10**7, seconds=0.1)
    amx = fake_machine(bf16=960.0)  # bf16 GEMMs calibrate at 4.8x fp32
    guessed = kinds(ProfileData(target="t", ops=cost(op(machine=amx, **conv))), amx)["compute_bound"]
    assert guessed.impact == pytest.approx(1 - 1 / 4.0)  # the capped peak ratio: the old prediction
    assert guessed.evidence["prediction"] == {"bf16": "calibrated GEMM peak ratio"}
    timed = (DtypeTiming("fp32", 0.1), DtypeTiming("bf16", 0.1 / 1.3))
    data = ProfileData(target="t", ops=cost(op(machine=amx, **conv)), dtype_timings=timed)
    found = kinds(data, amx)["compute_bound"]
    assert found.evidence["measured_layer_speedup"]["bf16"] == pytest.approx(1.3)
    assert found.impact == pytest.approx(1 - 1 / 1.3)
    assert found.evidence["predicted_saving"] == {"precision.bf16": pytest.approx(1 - 1 / 1.3)}
    assert "1.3x faster in bf16" in found.summary and "peak ratio says 4.8x" in found.summary
    # a dtype that measured no faster is no cure, whatever the calibration says
    slow = (DtypeTiming("fp32", 0.1), DtypeTiming("bf16", 0.105))
    data = ProfileData(target="t", ops=cost(op(machine=amx, **conv)), dtype_timings=slow)
    found = kinds(data, amx)["compute_bound"]
    assert found.severity == "low" and found.recommendations == ["batch.size"]
