"""The dtype pass times only dtypes whose cure kernel calibrated faster than fp32."""

from __future__ import annotations

import torch

from accel.profiling.cure_units import faster_dtypes
from accel.profiling.dtype_pass import dtype_pass, dtypes_worth_timing
from tests.profiling.analyzers.recorded import cost, cure_machine, op


def compute_bound_cost(machine):
    return cost(op(name="aten::addmm", flops=10**10, bytes_moved=10**7, seconds=0.1, machine=machine))


def test_a_dtype_whose_cure_kernel_is_slower_than_fp32_is_skipped_with_its_reason():
    # An AVX2 CPU, as measured: bf16 emulated at ~1 GFLOP/s, fbgemm int8 1.6x fp32.
    machine = cure_machine(fp32=82.0, bf16_linear=1.1, int8_dynamic_fbgemm=130.0)
    assert faster_dtypes(machine) == ["int8"]
    model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    timed, skipped = dtypes_worth_timing(compute_bound_cost(machine), machine, model)
    assert timed == ["int8"]
    assert "bf16" in skipped and "0.01x fp32" in skipped["bf16"] and "bf16_linear" in skipped["bf16"]


def test_no_dtype_is_timed_where_no_cure_kernel_beats_fp32():
    machine = cure_machine(fp32=100.0, bf16_linear=90.0, int8_dynamic_fbgemm=105.0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    timed, skipped = dtypes_worth_timing(compute_bound_cost(machine), machine, model)
    assert timed == [] and set(skipped) == {"bf16", "int8"}


def test_the_int8_variant_runs_torch_ao_dynamic_quantized_linear():
    class Holder:
        model = torch.nn.Sequential(torch.nn.Linear(64, 64)).eval()

    machine = cure_machine(fp32=100.0, int8_dynamic_fbgemm=300.0)
    timings = dtype_pass(Holder(), (torch.randn(4, 64),), {}, machine, ["int8"])
    assert [t.dtype for t in timings] == ["fp32", "int8"] and all(t.call_seconds > 0 for t in timings)
