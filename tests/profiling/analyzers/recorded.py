"""Recorded measurements for the analyzer tests (the analyzers are pure: no timing needed), and the
planted pipelines they are proven on, measured for real."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import accel
from accel.core.counts import OpCount
from accel.core.machine import Machine, describe_machine
from accel.profiling.analyzers import analyze
from accel.profiling.costmodel import CostModel, OpCost, roofline_seconds
from accel.profiling.data import EndToEnd, ProfileData, StageTiming
from accel.profiling.ranks import CollectiveCall, JobTimeline, RankStep, RankTimeline, job_profile_data
from accel.profiling.report import Finding, Report
from accel.profiling.run import build_report

PLANTED = Path(__file__).resolve().parents[2] / "planted"
HARDWARE_KINDS = ("memory_bandwidth", "compute_bound", "overhead", "memory_peak", "generation")
DATA_KINDS = ("data_loading", "input_decoding", "padding", "repeated_inputs")


# --- planted pipelines, measured -----------------------------------------------------------------


def profile_hardware(name: str, machine: Machine) -> Report:
    return accel.profile(PLANTED / f"hw_{name}.py", machine=machine, budget_seconds=3.0)


def profile_data_path(name: str) -> Report:
    return accel.profile(PLANTED / f"{name}.py", budget_seconds=3.0)


def assert_planted_bottleneck_is_primary(name: str, kind: str) -> Report:
    report = profile_data_path(name)
    assert report.primary == kind, [(f.kind, f.severity, f.impact) for f in report.findings]
    finding = report.finding(kind)
    assert finding.severity in ("high", "medium")
    assert finding.recommendations
    assert finding.evidence["predicted_saving"]
    assert abs(sum(s.share for s in report.stages) - 1.0) < 1e-6
    return report


# --- hardware measurements: a cost model of one call ----------------------------------------------


def fake_machine(bandwidth_gbs=20.0, gflops=200.0, **by_dtype) -> Machine:
    return dataclasses.replace(
        describe_machine("cpu"),
        peak_bandwidth_gbs=bandwidth_gbs,
        peak_gflops=gflops,
        peak_gflops_by_dtype={"fp32": gflops, **by_dtype},
        calibrated=True,
    )


def cure_machine(fp32=100.0, bandwidth_gbs=20.0, noisy=False, **kernels) -> Machine:
    """A calibrated machine with cure-kernel rates (accel.core.cure_kernels names, GFLOP/s): fp32
    eager Linear at `fp32`, which is also its square fp32 GEMM peak."""
    return dataclasses.replace(
        fake_machine(bandwidth_gbs=bandwidth_gbs, gflops=fp32),
        cure_gflops={"fp32_linear": fp32, **kernels},
        calibration_noisy=noisy,
    )


def cost(*ops, call_seconds=None) -> CostModel:
    ops = tuple(ops)
    return CostModel(
        ops=ops, call_seconds=call_seconds or sum(o.seconds for o in ops), peak_bandwidth_gbs=20.0, peak_gflops=200.0
    )


def op(name="aten::addmm", flops=0, bytes_moved=0, weight_bytes=0, seconds=0.0, machine=None, dtype="float32"):
    machine = machine or fake_machine()
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


def kinds(data: ProfileData, machine: Machine) -> dict[str, Finding]:
    """The hardware analyzers' findings by kind."""
    return {f.kind: f for f in analyze(data, machine, names=list(HARDWARE_KINDS))}


# --- data-path measurements: per-stage costs and the end-to-end wait -----------------------------


def loader_machine(cores: int = 4, device: str = "cuda:0") -> Machine:
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


# --- multi-rank timelines ------------------------------------------------------------------------


def rank_timeline(
    rank: int, data_wait: float, compute: float, transfer: float, lag: float, steps: int = 10
) -> RankTimeline:
    """A rank in lockstep: each step starts together; it arrives at its all-reduce after its data
    wait and compute, and the all-reduce ends `transfer` after the last rank (`lag` after it) came."""
    period = 0.1
    out_steps, calls = [], []
    for i in range(steps):
        start = i * period
        arrival = start + data_wait + compute
        done = arrival + lag + transfer
        out_steps.append(RankStep(start, start + period, data_wait, 8))
        calls.append(CollectiveCall("ddp.allreduce", arrival, done))
    return RankTimeline(rank=rank, steps=tuple(out_steps), calls=tuple(calls))


def job_report(job: JobTimeline) -> Report:
    machine = describe_machine("cpu")
    return build_report(job_profile_data(job, "job", machine.cores), machine)
