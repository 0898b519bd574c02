"""compute_bound: a large-batch conv net runs above the ridge; the prediction comes from the measured call."""

from __future__ import annotations

import dataclasses

import pytest

from accel.profiling.analyzers import analyze
from accel.profiling.data import DtypeTiming, ProfileData
from tests.profiling.analyzers.recorded import (
    HARDWARE_KINDS,
    cost,
    cure_machine,
    fake_machine,
    kinds,
    op,
    profile_hardware,
)


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
    elif machine.calibration_noisy:  # a busy machine's calibration: no claim of a limit, said as such
        assert compute.severity in ("low", "info") and (compute.severity == "low" or "too noisy" in compute.summary)
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


# --- headroom: "at the machine's limit" only near the fastest unit a cure can use ------------------


def gemm_model(gflops: float, machine) -> ProfileData:
    """One second of Linear GEMMs at `gflops`, in two layers (60% and 40% of the time)."""
    big = op(name="aten::addmm", flops=int(0.6e9 * gflops), bytes_moved=10**7, seconds=0.6, machine=machine)
    small = op(name="aten::addmm", flops=int(0.4e9 * gflops), bytes_moved=10**7, seconds=0.4, machine=machine)
    big = dataclasses.replace(big, count=dataclasses.replace(big.count, module="encoder.ffn"))
    small = dataclasses.replace(small, count=dataclasses.replace(small.count, module="encoder.attention"))
    return ProfileData(target="t", ops=cost(big, small))


def test_a_model_at_80_of_a_300_gflops_int8_cure_is_not_at_the_limit_and_names_int8():
    machine = cure_machine(fp32=100.0, int8_dynamic_fbgemm=300.0)
    found = kinds(gemm_model(80.0, machine), machine)["compute_bound"]
    assert "machine's limit" not in found.summary.replace("not at the machine's limit", "")
    assert found.evidence["at_limit"] is False
    assert found.evidence["fastest_unit"] == "int8_dynamic_fbgemm"
    assert found.evidence["fraction_of_fastest_unit"] == pytest.approx(80 / 300, rel=0.01)
    assert found.recommendations[0] == "quantize.int8_dynamic"
    assert "int8" in found.summary
    assert "encoder.ffn" in found.summary  # the top layer holding the time
    assert found.evidence["layers"][0]["name"] == "encoder.ffn"
    assert found.evidence["layers"][0]["share"] == pytest.approx(0.6)
    assert found.evidence["layers"][0]["roof_gflops"] == pytest.approx(100.0, rel=0.01)


def test_a_model_at_90_with_no_faster_cure_kernel_runs_at_the_limit():
    machine = cure_machine(fp32=100.0, int8_dynamic_fbgemm=60.0, bf16_linear=1.0)
    found = kinds(gemm_model(90.0, machine), machine)["compute_bound"]
    assert found.evidence["at_limit"] is True
    assert "runs at the machine's limit" in found.summary
    assert found.recommendations == ["batch.size"] and found.severity == "low"


def test_a_model_far_below_its_roof_with_no_faster_unit_names_where_the_time_is():
    machine = cure_machine(fp32=100.0)
    found = kinds(gemm_model(30.0, machine), machine)["compute_bound"]
    assert found.evidence["at_limit"] is False
    assert "not at the machine's limit" in found.summary and "encoder.ffn 60% at 30 of 100 GFLOP/s" in found.summary


def test_a_noisy_calibration_is_too_noisy_to_decide_not_a_verdict():
    machine = cure_machine(fp32=100.0, noisy=True)
    found = kinds(gemm_model(90.0, machine), machine)["compute_bound"]
    assert found.severity == "info" and found.recommendations == []
    assert "too noisy to decide" in found.summary and "the model runs at the machine's limit" not in found.summary
    assert found.evidence["too_noisy"]


def test_op_and_call_times_that_disagree_are_too_noisy_to_decide():
    machine = cure_machine(fp32=100.0)
    data = gemm_model(90.0, machine)
    data = dataclasses.replace(data, ops=dataclasses.replace(data.ops, profiled_ops_seconds=(0.4, 1.0, 0.9)))
    found = kinds(data, machine)["compute_bound"]
    assert found.severity == "info" and "too noisy to decide" in found.summary


def test_a_rate_above_the_calibrated_peak_says_the_peak_is_suspect():
    machine = cure_machine(fp32=100.0)
    found = kinds(gemm_model(150.0, machine), machine)["compute_bound"]  # 1.5x the 100 GFLOP/s peak
    assert found.severity == "info" and "peak measurement is suspect" in found.summary


# --- a busy machine: threads that wait for a core make the measurements noise ----------------------


def test_a_cost_pass_whose_threads_waited_for_cores_is_too_noisy_to_decide():
    """A stalled cost pass (2 intra-op threads on a busy 2-core machine: the call time stalls while
    the profiled op times do not) put the compute-bound share below its threshold and gave no
    finding at all. Metered, the share of runnable time the threads ran says the times are noise."""
    conv = dict(name="aten::convolution", flops=10**10, bytes_moved=10**7, seconds=0.01)
    faster = fake_machine(bf16=600.0)
    stalled = dataclasses.replace(cost(op(machine=faster, **conv), call_seconds=0.2), cpu_share=0.5)
    found = kinds(ProfileData(target="t", ops=stalled), faster)["compute_bound"]
    assert found.severity == "info" and found.recommendations == []
    assert "too noisy to decide" in found.summary and "50% of the time they were runnable" in found.summary
    # the same numbers with the threads given their cores: a model not compute-bound, no finding
    quiet = dataclasses.replace(stalled, cpu_share=0.97)
    assert "compute_bound" not in kinds(ProfileData(target="t", ops=quiet), faster)


def test_dtype_timings_taken_while_threads_waited_for_cores_are_not_read():
    conv = dict(name="aten::convolution", flops=10**10, bytes_moved=10**7, seconds=0.1)
    amx = fake_machine(bf16=960.0)
    stalled = (DtypeTiming("fp32", 0.1, cpu_share=0.45), DtypeTiming("bf16", 0.2, cpu_share=0.45))
    found = kinds(ProfileData(target="t", ops=cost(op(machine=amx, **conv)), dtype_timings=stalled), amx)
    # the stalled rounds said bf16 is 2x slower; the calibrated ratio stands in for them
    assert found["compute_bound"].evidence["prediction"] == {"bf16": "calibrated GEMM peak ratio"}
    assert found["compute_bound"].recommendations == ["precision.bf16"]


def test_a_cure_in_another_runtime_is_predicted_from_its_calibrated_kernel():
    """The fastest unit of a CPU may be ONNX Runtime's int8 MatMul (MLAS): its cure is predicted from
    that kernel's calibrated ratio (the engine orders candidates by it), after the measured cures."""
    vnni = dataclasses.replace(
        cure_machine(fp32=100.0, int8_dynamic_fbgemm=200.0, ort_int8=350.0, ort_fp32=105.0),
        isa_flags=("avx2", "fma", "avx512f", "avx512_vnni"),
        cpu_capability="AVX512",
    )
    found = kinds(gemm_model(80.0, vnni), vnni)["compute_bound"]
    predicted = found.evidence["predicted_saving"]
    assert predicted["quantize.int8_dynamic"] == pytest.approx(0.5, rel=0.01)
    assert predicted["onnx.int8_dynamic"] == pytest.approx(1 - 1 / 3.5, rel=0.01)
    assert "onnx.runtime" not in predicted  # 1.05x: within calibration noise, no cure
    # OpenVINO's int8, not calibrated in accel's process, is predicted from ORT's int8 kernel...
    assert predicted["openvino.int8"] == predicted["onnx.int8_dynamic"]
    assert found.recommendations == ["quantize.int8_dynamic", "onnx.int8_dynamic", "openvino.int8"]
    # ...only where the CPU has int8 dot-product units: on AVX2 (torch held there too) it is not
    for flags, capability in ((("avx2", "fma"), "AVX2"), (vnni.isa_flags, "AVX2")):
        avx2 = dataclasses.replace(vnni, isa_flags=flags, cpu_capability=capability)
        found = kinds(gemm_model(80.0, avx2), avx2)["compute_bound"]
        assert "openvino.int8" not in found.evidence["predicted_saving"]
        assert "onnx.int8_dynamic" in found.evidence["predicted_saving"]
    # on a busy machine the calibration is flagged noisy: its ratio still orders the search
    noisy = cure_machine(fp32=100.0, int8_dynamic_fbgemm=200.0, ort_int8=350.0, noisy=True)
    assert "onnx.int8_dynamic" in kinds(gemm_model(80.0, noisy), noisy)["compute_bound"].recommendations
