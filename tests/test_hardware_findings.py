"""Hardware findings on planted pipelines, measured for real, and the analyzers on recorded data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import accel
from accel.core.calibration import calibrated_machine
from accel.core.counts import OpCount
from accel.core.machine import describe_machine
from accel.profiling.analyzers import analyze
from accel.profiling.costmodel import CostModel, OpCost
from accel.profiling.data import GenerationProfile, GenerationStep, LayerActivation, MemoryProfile, ProfileData

PLANTED = Path(__file__).parent / "planted"
HARDWARE_KINDS = ("memory_bandwidth", "compute_bound", "overhead", "memory_peak", "generation")


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    """One real calibration, cached in a temporary ACCEL_CACHE_DIR, at one intra-op thread.

    One thread for calibration and the planted profiles alike: on a shared CI machine a descheduled
    OpenMP worker stalls every parallel op for a scheduler slice, which no finding is about.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    patch = pytest.MonkeyPatch()
    # one calibration for the session, shared by the modules that profile (same base temp dir)
    patch.setenv("ACCEL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "accel-xdg"))
    try:
        yield calibrated_machine()
    finally:
        patch.undo()
        torch.set_num_threads(threads)


def profile(name, machine):
    return accel.profile(PLANTED / f"hw_{name}.py", machine=machine, budget_seconds=3.0)


def fake_machine(bandwidth_gbs=20.0, gflops=200.0, **by_dtype):
    import dataclasses

    return dataclasses.replace(
        describe_machine("cpu"),
        peak_bandwidth_gbs=bandwidth_gbs,
        peak_gflops=gflops,
        peak_gflops_by_dtype={"fp32": gflops, **by_dtype},
        calibrated=True,
    )


# --- planted pipelines, measured --------------------------------------------------------------


@pytest.mark.slow
def test_batch1_wide_mlp_is_memory_bandwidth(machine):
    report = profile("wide_mlp", machine)
    assert report.primary == "memory_bandwidth"
    finding = report.finding("memory_bandwidth")
    assert finding.evidence["weight_bytes_per_call"] > 0.9 * finding.evidence["bytes_per_call"]
    assert "quantize.int8_dynamic" in finding.recommendations
    assert report.finding("compute_bound") is None
    layers = {layer["name"] for layer in report.to_dict()["layers"]}
    assert {"0", "2", "4"} <= layers
    # the hardware sections survive the JSON round trip
    from accel.core.io import json_default
    from accel.profiling.report import Report

    again = Report.from_dict(json.loads(json.dumps(report.to_dict(), default=json_default)))
    assert again.extra["cost"]["op_count"] == report.extra["cost"]["op_count"] and again.primary == report.primary


@pytest.mark.slow
def test_large_batch_conv_net_is_compute_bound_not_memory_bandwidth(machine):
    report = profile("conv_net", machine)
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


def test_many_tiny_ops_are_overhead(machine):
    report = profile("tiny_ops", machine)
    assert report.primary == "overhead"
    finding = report.finding("overhead")
    assert finding.evidence["op_count_per_call"] >= 200
    assert finding.evidence["median_op_seconds"] > 4 * finding.evidence["median_op_roofline_seconds"]
    assert "onnx.runtime" in finding.recommendations


@pytest.mark.slow
def test_highres_cnn_has_memory_peak_with_predicted_reduction(machine):
    report = profile("highres_cnn", machine)
    finding = report.finding("memory_peak")
    assert finding is not None
    assert finding.evidence["predicted_reduction"] >= 2.0
    assert finding.evidence["leading_working_bytes"] > 4 * finding.evidence["later_working_bytes"]
    assert finding.evidence["peak_bytes"] > 0
    assert report.to_dict()["memory"]["layers"][0]["name"] == "0"


@pytest.mark.slow
def test_decoder_without_kv_cache_is_generation(machine):
    report = profile("decoder_lm", machine)
    assert report.primary == "generation"
    finding = report.finding("generation")
    assert finding.evidence["slope_seconds_per_position"] > 0
    assert finding.evidence["fitted_last_step_seconds"] > 1.5 * finding.evidence["fitted_first_step_seconds"]
    assert finding.evidence["steps"] == 48
    assert 0 < finding.evidence["recompute_share"] < 1


# --- analyzers on recorded measurements -------------------------------------------------------


def cost(*ops, call_seconds=None):
    ops = tuple(ops)
    return CostModel(
        ops=ops, call_seconds=call_seconds or sum(o.seconds for o in ops), peak_bandwidth_gbs=20.0, peak_gflops=200.0
    )


def op(name="aten::addmm", flops=0, bytes_moved=0, weight_bytes=0, seconds=0.0, machine=None, dtype="float32"):
    machine = machine or fake_machine()
    from accel.profiling.costmodel import roofline_seconds

    ridge = machine.peak_gflops / machine.peak_bandwidth_gbs
    count = OpCount(
        op=name,
        module="layer",
        flops=flops,
        bytes_read=bytes_moved,
        bytes_written=0,
        weight_bytes=weight_bytes,
        dtype=dtype,
    )
    return OpCost(
        count=count,
        seconds=seconds,
        roofline_seconds=roofline_seconds(flops, bytes_moved, machine.peak_gflops, machine.peak_bandwidth_gbs),
        memory_bound=(flops / bytes_moved if bytes_moved else 0) < ridge,
    )


def kinds(data, machine):
    return {f.kind: f for f in analyze(data, machine, names=list(HARDWARE_KINDS))}


def test_streaming_weights_near_peak_is_memory_bandwidth_with_int8_saving():
    machine = fake_machine()
    data = ProfileData(
        target="t", ops=cost(op(flops=2 * 10**8, bytes_moved=4 * 10**8, weight_bytes=4 * 10**8, seconds=0.025))
    )
    found = kinds(data, machine)
    assert set(found) == {"memory_bandwidth"}
    assert found["memory_bandwidth"].impact == pytest.approx(0.75, rel=0.01)  # 3/4 of fp32 weight bytes


def test_memory_bound_ops_far_below_peak_bandwidth_are_not_called_bandwidth_bound():
    data = ProfileData(target="t", ops=cost(op(flops=10**6, bytes_moved=10**7, seconds=0.1)))
    assert "memory_bandwidth" not in kinds(data, fake_machine())


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


def test_memory_peak_and_generation_on_recorded_data():
    layers = (
        LayerActivation("conv1", 2_000_000, 16_000_000),
        LayerActivation("pool", 16_000_000, 1_000_000),
        LayerActivation("conv2", 1_000_000, 500_000),
        LayerActivation("conv3", 500_000, 250_000),
        LayerActivation("conv4", 250_000, 250_000),
        LayerActivation("conv5", 250_000, 250_000),
        LayerActivation("pool2", 250_000, 1000),
        LayerActivation("fc", 1000, 40),
    )
    memory = MemoryProfile(peak_bytes=20_000_000, parameter_bytes=10_000, layers=layers, device_memory_bytes=10**10)
    steps = tuple(GenerationStep(position=p, seconds=0.001 * p) for p in range(8, 40))
    flat = tuple(GenerationStep(position=p, seconds=0.01) for p in range(8, 40))
    data = ProfileData(
        target="t",
        memory=memory,
        generation=GenerationProfile(steps=steps, total_seconds=sum(s.seconds for s in steps), parameter_bytes=10**6),
    )
    found = kinds(data, fake_machine())
    # leading layers need 18 MB, later ones 1.5 MB: 12x, capped at the 8x patch-based inference shows
    assert found["memory_peak"].evidence["predicted_reduction"] == 8.0
    assert found["memory_peak"].recommendations == ["patch.inference"]
    assert found["generation"].evidence["recompute_share"] > 0.5
    data.generation = GenerationProfile(steps=flat, total_seconds=0.32, parameter_bytes=10**6)
    assert kinds(data, fake_machine())["generation"].impact == 0.0


@pytest.mark.gpu
def test_wide_mlp_on_cuda_is_memory_bandwidth():
    import torch

    from accel.core.calibration import calibrated_machine
    from accel.core.machine import describe_machine

    machine = calibrated_machine(describe_machine("cuda"), quick=True)
    pipeline = accel.load(PLANTED / "hw_wide_mlp.py")
    pipeline = pipeline.replace(model=pipeline.model.cuda(), inputs=tuple(t.cuda() for t in pipeline.inputs))
    report = accel.profile(pipeline, machine=machine, budget_seconds=3.0)
    assert report.finding("memory_bandwidth") is not None
    assert torch.cuda.max_memory_allocated() > 0
