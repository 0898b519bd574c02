"""The dtype pass of `accel profile`: the model's call timed as each lower precision's cure runs it.

Only dtypes whose cure kernel calibration measured faster than fp32 are timed
(accel.profiling.cure_units.faster_dtypes): on an AVX2-only CPU a bf16 BERT runs at about one
GFLOP/s, and timing it costs minutes and says nothing. The others are skipped with the reason
recorded. The variants run the cures' own kernels: the model cast whole for bf16/fp16 (precision.*,
cast mode), its Linear layers dynamically quantized with torch.ao for int8 (quantize.int8_dynamic's
eager backend: fbgemm on x86, the kernel calibration times as that cure's).

fp32 and each variant are timed in interleaved rounds (a burst of other load falls on every side
rather than on one), as many rounds as the pass's share of the profile's budget holds. The share of
their runnable time the rounds' threads ran is recorded (accel.core.steady.CpuMeter): below
accel.profiling.costmodel.MIN_CPU_SHARE the rounds' medians are stalls of intra-op threads waiting
for a core, not the dtypes' speeds, and compute_bound does not read them.
"""

from __future__ import annotations

import copy
import functools
import statistics
import warnings
from collections import defaultdict
from typing import Any, Callable

import torch

from accel.core.budget import PassBudget
from accel.core.dtypes import CALIBRATED
from accel.core.machine import Machine
from accel.core.measure import device_sync, now
from accel.core.steady import CpuMeter
from accel.profiling.costmodel import CostModel, split_roofline
from accel.profiling.cure_units import EAGER_CURES, dtype_kernel_speedups, faster_dtypes
from accel.profiling.data import DtypeTiming

# Interleaved rounds wanted, each one call of every dtype: a burst of load on a shared machine
# falls on both sides of several rounds rather than on one dtype; nine give a stable median.
DTYPE_ROUNDS = 9
# The dtype pass runs when compute-bound ops take at least this share of the call: below it, no
# faster unit can save much and compute_bound reports nothing.
MIN_COMPUTE_SHARE_TO_TIME = 0.3


def dtypes_worth_timing(cost: CostModel | None, machine: Machine, model: Any) -> tuple[list[str], dict[str, str]]:
    """The dtypes to time the model in, and why each other cure dtype is not timed."""
    if not isinstance(cost, CostModel) or cost.call_seconds <= 0:
        return [], {}
    split = split_roofline(cost)
    if split.share(split.compute_seconds) < MIN_COMPUTE_SHARE_TO_TIME:
        return [], {}
    faster = faster_dtypes(machine, EAGER_CURES)
    skipped = {
        name: f"its cure kernel ran {ratio:.2f}x fp32 in calibration ({kernel})"
        for name, (ratio, kernel) in dtype_kernel_speedups(machine, EAGER_CURES).items()
        if name not in faster
    }
    has_linear = any(isinstance(m, torch.nn.Linear) for m in model.modules())
    chosen = []
    for name in faster:
        if name == "int8" and machine.is_cuda:
            skipped[name] = "no int8 dynamic quantization cure on a GPU"
        elif name == "int8" and not has_linear:
            skipped[name] = "the model has no Linear layer for int8 dynamic quantization"
        else:
            chosen.append(name)
    return chosen, skipped


def dtype_pass(
    pipeline: Any,
    args: tuple,
    kwargs: dict,
    machine: Machine,
    dtypes: list[str],
    budget: PassBudget | None = None,
) -> tuple[DtypeTiming, ...]:
    """The call the cost pass measured, on the model as it is (fp32) and as each dtype's cure runs
    it, timed in interleaved rounds of one call each (no profiler attached): up to DTYPE_ROUNDS,
    as `budget` allows (one round at least); per dtype, the median. A variant whose build and warm-up call leave no time for a round is dropped
    (the pass is then cut short)."""
    if not dtypes:
        return ()
    budget = budget or PassBudget("dtypes", float("inf"))
    calls: dict[str, Callable[[], Any]] = {}
    per_call: dict[str, float] = {}
    for name in ["fp32", *dtypes]:
        if name != "fp32" and budget.left() <= sum(per_call.values()):
            budget.cut_short = True
            break
        try:
            calls[name] = _variant_call(pipeline.model, name, args, kwargs)
            if name == "fp32" and budget.call_seconds:
                per_call[name] = budget.call_seconds  # the model is warm: earlier passes called it
                continue
            with torch.inference_mode():
                began = now()
                calls[name]()  # warm-up, and a dtype the model cannot run in fails here
                per_call[name] = now() - began
            budget.calls += 1
        except Exception:  # noqa: BLE001 - a dtype the model cannot run in is left to the peak-ratio fallback
            calls.pop(name, None)
            if name == "fp32":
                raise
    if len(calls) < 2:
        return ()
    sync = device_sync(machine.device)
    round_seconds = sum(per_call[name] for name in calls)
    rounds = budget.fit(round_seconds, DTYPE_ROUNDS, minimum=1)
    samples: dict[str, list[float]] = defaultdict(list)
    meter = CpuMeter(torch.get_num_threads())
    with torch.inference_mode():
        for index in range(rounds):
            for name in _order(list(calls), index):
                samples[name].append(meter.watch(functools.partial(_timed, calls[name], sync)))
            budget.calls += len(calls)
            if index + 1 < rounds and budget.left() < round_seconds:
                budget.cut_short = True
                break
    share = None if machine.is_cuda else meter.share
    return tuple(
        DtypeTiming(dtype=name, call_seconds=statistics.median(samples[name]), cpu_share=share) for name in calls
    )


def _timed(call: Callable[[], Any], sync: Callable[[], None]) -> float:
    began = now()
    call()
    sync()
    return now() - began


def _order(names: list[str], index: int) -> list[str]:
    """Each round the other way round, so no dtype always runs right after the same other one."""
    return names if index % 2 == 0 else names[::-1]


def _call(model: Any, args: tuple, kwargs: dict) -> Any:
    return model(*args, **kwargs)


def cast_floating(value: Any, dtype: torch.dtype) -> Any:
    """Floating tensors in `value` cast to `dtype`, containers (ModelOutputs too) rebuilt as they were."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, tuple):
        return (
            type(value)(*(cast_floating(v, dtype) for v in value))
            if hasattr(value, "_fields")
            else tuple(cast_floating(v, dtype) for v in value)
        )
    if isinstance(value, list):
        return [cast_floating(v, dtype) for v in value]
    if isinstance(value, dict):
        items = {k: cast_floating(v, dtype) for k, v in value.items()}
        try:
            return type(value)(**items)
        except TypeError:
            return items
    return value


def _variant_call(model: torch.nn.Module, name: str, args: tuple, kwargs: dict) -> Callable[[], Any]:
    """The model as the cure for `name` runs it, and the call on it: cast whole for bf16/fp16
    (precision.*, cast mode), Linear layers dynamically quantized for int8 (quantize.int8_dynamic's
    eager backend: torch.ao's quantize_dynamic, fbgemm's kernels on x86)."""
    if name == "fp32":
        return functools.partial(_call, model, args, kwargs)
    if name == "int8":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.ao.quantization import quantize_dynamic

            variant = quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
        return functools.partial(_call, variant, args, kwargs)
    dtype = CALIBRATED[name]
    variant = copy.deepcopy(model).to(dtype)
    return functools.partial(_call, variant, cast_floating(args, dtype), cast_floating(kwargs, dtype))
