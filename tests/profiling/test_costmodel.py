"""The cost model: counted ops joined to profiler times, roofline arithmetic, aggregation."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from accel.core.counts import Counts, OpCount, count_forward
from accel.core.machine import describe_machine
from accel.profiling.costmodel import build_cost_model, roofline_seconds, split_roofline
from accel.profiling.hardware import profile_op_seconds


def machine():
    return dataclasses.replace(
        describe_machine("cpu"),
        peak_bandwidth_gbs=10.0,
        peak_gflops=100.0,
        peak_gflops_by_dtype={"fp32": 100.0, "bf16": 400.0},
        calibrated=True,
    )


def test_roofline_is_the_larger_of_compute_and_memory_time():
    assert roofline_seconds(10**11, 10**9, 100.0, 10.0) == pytest.approx(1.0)  # compute: 1 s, memory 0.1 s
    assert roofline_seconds(10**8, 10**10, 100.0, 10.0) == pytest.approx(1.0)  # memory: 1 s


def test_build_cost_model_classifies_by_ridge_and_dtype_peak():
    counts = Counts(
        ops=(
            OpCount(
                "aten::mm", "a", flops=10**9, bytes_read=10**6, bytes_written=0, weight_bytes=10**6, dtype="float32"
            ),
            OpCount(
                "aten::add",
                "b",
                flops=10**6,
                bytes_read=8 * 10**6,
                bytes_written=4 * 10**6,
                weight_bytes=0,
                dtype="float32",
            ),
            OpCount("aten::mm", "a", flops=10**9, bytes_read=10**6, bytes_written=0, weight_bytes=0, dtype="bfloat16"),
        )
    )
    model = build_cost_model(counts, [0.02, 0.002, 0.01], machine(), call_seconds=0.05)
    mm, add, mm_bf16 = model.ops
    assert not mm.memory_bound and add.memory_bound
    assert mm.roofline_seconds == pytest.approx(0.01) and mm.achieved_fraction == pytest.approx(0.5)
    assert mm_bf16.roofline_seconds == pytest.approx(0.0025)  # bf16 peak is 4x fp32
    layers = {g.name: g for g in model.by_layer()}
    assert layers["a"].calls == 2 and layers["a"].seconds == pytest.approx(0.03)
    assert model.by_op()[0].name == "aten::mm"
    split = split_roofline(model)
    assert split.memory_seconds == pytest.approx(0.002) and split.compute_seconds == pytest.approx(0.03)


def test_profiled_times_larger_than_the_call_are_scaled_to_it():
    counts = Counts(ops=(OpCount("aten::add", "x", 10, 40, 40, 0, "float32"),) * 4)
    model = build_cost_model(counts, [1.0] * 4, machine(), call_seconds=2.0)
    assert model.ops_seconds == pytest.approx(2.0)


def test_profiler_times_join_every_counted_op_and_favour_the_big_matmul():
    torch.manual_seed(0)
    torch.set_num_threads(1)  # one thread: a descheduled pool thread on a shared machine stalls any op by ms
    net = nn.Sequential(nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 8)).eval()
    x = torch.randn(64, 512)
    with torch.inference_mode():
        counts = count_forward(lambda: net(x), net)
        seconds = profile_op_seconds(lambda: net(x), counts)
    assert len(seconds) == counts.op_count and all(s >= 0 for s in seconds)
    by_module = {}
    for op, s in zip(counts.ops, seconds):
        if op.op == "aten::addmm":
            by_module[op.module] = s
    # 64x512x2048 against 64x2048x8: 64x the FLOPs, so clearly longer whatever the load
    assert by_module["0"] > 2 * by_module["2"]


def test_a_pass_that_fails_on_an_unusual_model_is_skipped_and_named():
    from torch.utils._python_dispatch import _get_current_dispatch_mode

    import accel
    from accel.profiling.data import ProfileData
    from accel.profiling.hardware import hardware_passes

    class RefusesModes(nn.Module):
        def forward(self, x):
            if _get_current_dispatch_mode() is not None:
                raise RuntimeError("no dispatch modes here")
            return x * 2

    data = ProfileData(target="t")
    data = hardware_passes(accel.Pipeline(model=RefusesModes(), inputs=(torch.ones(3),)), data, machine())
    assert data.ops is None and data.memory is not None
    assert data.extra["hardware_passes_skipped"] == {"cost": "RuntimeError: no dispatch modes here"}


def test_passes_a_profile_can_do_without_are_not_run_once_the_budget_is_spent():
    """A slow model's profile ended far past its budget: each pass made one call at least. Once not
    one call fits in what is left, the memory and dtype passes are not run, and the note says so."""
    import accel
    from accel.core.budget import Deadline
    from accel.profiling.data import ProfileData
    from accel.profiling.hardware import PASS_WEIGHTS, hardware_passes
    from accel.profiling.run import budget_note

    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8)).eval()
    deadline = Deadline(1e-6, PASS_WEIGHTS)
    data = hardware_passes(
        accel.Pipeline(model=model, inputs=(torch.ones(4, 64),)), ProfileData(target="t"), machine(), deadline=deadline
    )
    assert data.ops is not None  # the cost pass makes its one call: the findings need it
    assert data.memory is None and data.dtype_timings == ()
    ran = {p.name: p.calls for p in deadline.passes}
    assert ran["memory"] == 0 and ran["dtypes"] == 0
    assert "memory (not run)" in budget_note(deadline) and "dtypes (not run)" in budget_note(deadline)
