"""The hardware passes of `accel profile`: cost model, memory and generation, each a separate run.

1. cost: count FLOPs and bytes per aten op (accel.core.counts), time the ops under torch.profiler
   (accel.profiling.costmodel), and time plain model calls with no profiler attached;
2. memory: peak tensor memory of one model call (accel.core.measure.peak_memory_bytes) and the input
   and output sizes of every leaf layer, in execution order;
3. generation (pipelines with `generate`, accel.profiling.generation): every model call inside a
   generate loop, its seconds, tokens fed and tokens recomputed, and the cache's measured gain.

Each pass returns plain data stored in ProfileData (ops, memory, generation); analyzers read it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import statistics
import warnings
from collections import defaultdict
from typing import Any, Callable

import torch

from accel.core.counts import Counts, OpCount, count_forward, parameter_bytes
from accel.core.dtypes import CALIBRATED
from accel.core.machine import Machine
from accel.core.measure import device_sync, peak_memory_bytes, time_calls
from accel.core.pipeline import Pipeline, split_call, tensors_in
from accel.profiling.costmodel import (
    CALL_MARKER,
    PROFILED_CALLS,
    CostModel,
    build_cost_model,
    faster_dtypes,
    split_roofline,
)
from accel.profiling.data import (
    DtypeTiming,
    LayerActivation,
    MemoryProfile,
    PatchPlan,
    ProfileData,
)
from accel.profiling.generation import generation_pass
from accel.profiling.patch_plan import plan_patches

CALL_TIMING_BUDGET_SECONDS = 1.0
# The dtype pass times fp32 and each faster dtype in turn, this many rounds: interleaved, so a
# burst of other load on a shared machine falls on both sides rather than on one.
DTYPE_ROUNDS = 3
DTYPE_CALLS_PER_ROUND = 3


def _bytes(value: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors_in(value))


def _outermost_matches(event: Any, names: set[str], found: list[Any]) -> None:
    for child in sorted(event.cpu_children, key=lambda c: c.time_range.start):
        if child.name in names:
            found.append(child)
        else:
            _outermost_matches(child, names, found)


def profile_op_seconds(
    fn: Callable[[], Any], counts: Counts, *, device: str = "cpu", calls: int = PROFILED_CALLS
) -> list[float]:
    """Seconds of each counted op (in the order of `counts.ops`), median over `calls` profiled calls."""
    from torch.profiler import ProfilerActivity, profile, record_function

    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    names = {o.op for o in counts.ops}
    fn()  # warm-up: first calls allocate and choose kernels
    if cuda:
        torch.cuda.synchronize()
    with profile(activities=activities) as prof:
        for _ in range(calls):
            with record_function(CALL_MARKER):
                fn()
            if cuda:
                torch.cuda.synchronize()
    per_call = []
    for marker in (e for e in prof.events() if e.name == CALL_MARKER):
        found: list[Any] = []
        _outermost_matches(marker, names, found)
        per_call.append(found)
    return _join(counts.ops, per_call, cuda)


def _event_seconds(event: Any, cuda: bool) -> float:
    if cuda:
        device_us = getattr(event, "device_time_total", 0.0) or 0.0
        return max(device_us, 0.0) / 1e6 or event.cpu_time_total / 1e6
    return event.cpu_time_total / 1e6


def _join(ops: tuple[OpCount, ...], per_call: list[list[Any]], cuda: bool) -> list[float]:
    """k-th counted op of a name <- k-th profiled event of that name; the name's median where counts differ."""
    samples: dict[tuple[str, int], list[float]] = defaultdict(list)
    by_name: dict[str, list[float]] = defaultdict(list)
    for events in per_call:
        seen: dict[str, int] = defaultdict(int)
        for event in events:
            seconds = _event_seconds(event, cuda)
            samples[(event.name, seen[event.name])].append(seconds)
            by_name[event.name].append(seconds)
            seen[event.name] += 1
    result = []
    seen_ops: dict[str, int] = defaultdict(int)
    for op in ops:
        values = samples.get((op.op, seen_ops[op.op])) or by_name.get(op.op) or [0.0]
        seen_ops[op.op] += 1
        result.append(statistics.median(values))
    return result


def cost_pass(pipeline: Pipeline, call: Callable[[], Any], machine: Machine) -> CostModel:
    """Counts, op times and the plain time of `call`, one model call."""
    model = pipeline.model
    sync = device_sync(machine.device)
    with torch.inference_mode():
        counts = count_forward(call, model if isinstance(model, torch.nn.Module) else None)
        op_seconds = profile_op_seconds(call, counts, device=machine.device)
        call_seconds = time_calls(call, budget_seconds=CALL_TIMING_BUDGET_SECONDS, max_repeats=50, sync=sync).median
    return build_cost_model(counts, op_seconds, machine, call_seconds)


def _activation(name: str, inputs: Any, output: Any) -> LayerActivation:
    first = tensors_in(inputs)
    shape = tuple(first[0].shape) if first else ()
    return LayerActivation(name=name, input_bytes=_bytes(inputs), output_bytes=_bytes(output), input_shape=shape)


def _cast_floating(value: Any, dtype: torch.dtype) -> Any:
    """Floating tensors in `value` cast to `dtype`, containers (ModelOutputs too) rebuilt as they were."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, tuple):
        return (
            type(value)(*(_cast_floating(v, dtype) for v in value))
            if hasattr(value, "_fields")
            else tuple(_cast_floating(v, dtype) for v in value)
        )
    if isinstance(value, list):
        return [_cast_floating(v, dtype) for v in value]
    if isinstance(value, dict):
        items = {k: _cast_floating(v, dtype) for k, v in value.items()}
        try:
            return type(value)(**items)
        except TypeError:
            return items
    return value


def dtype_pass(
    pipeline: Pipeline, args: tuple, kwargs: dict, machine: Machine, dtypes: list[str]
) -> tuple[DtypeTiming, ...]:
    """The call the cost pass measured, on the model as it is (fp32) and as each dtype's cure runs
    it, timed in DTYPE_ROUNDS interleaved rounds of DTYPE_CALLS_PER_ROUND calls each (no profiler
    attached); per dtype, the median."""
    if not dtypes:
        return ()
    calls = {}
    for name in ["fp32", *dtypes]:
        try:
            calls[name] = _variant_call(pipeline.model, name, args, kwargs)
            with torch.inference_mode():
                calls[name]()  # warm-up, and a dtype the model cannot run in fails here
        except Exception:  # noqa: BLE001 - a dtype the model cannot run in is left to the peak-ratio fallback
            calls.pop(name, None)
            if name == "fp32":
                raise
    if len(calls) < 2:
        return ()
    sync = device_sync(machine.device)
    samples: dict[str, list[float]] = defaultdict(list)
    with torch.inference_mode():
        for _ in range(DTYPE_ROUNDS):
            for name, call in calls.items():
                measured = time_calls(
                    call, warmup=1, min_repeats=DTYPE_CALLS_PER_ROUND, max_repeats=DTYPE_CALLS_PER_ROUND, sync=sync
                )
                samples[name].extend(measured.samples)
    return tuple(DtypeTiming(dtype=name, call_seconds=statistics.median(values)) for name, values in samples.items())


def _call(model: Any, args: tuple, kwargs: dict) -> Any:
    return model(*args, **kwargs)


def _variant_call(model: torch.nn.Module, name: str, args: tuple, kwargs: dict) -> Callable[[], Any]:
    """The model as the cure for `name` runs it, and the call on it: cast whole for bf16/fp16
    (precision.*, cast mode), Linear layers dynamically quantized for int8 (quantize.int8_dynamic's
    eager backend)."""
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
    return functools.partial(_call, variant, _cast_floating(args, dtype), _cast_floating(kwargs, dtype))


def memory_pass(pipeline: Pipeline, call: Callable[[], Any], machine: Machine) -> MemoryProfile:
    """Peak memory of `call` (one model call), every leaf layer's activation, and the patch plan."""
    model = pipeline.model
    layers: list[LayerActivation] = []
    modules: list[torch.nn.Module] = []
    handles = []

    def record(module: torch.nn.Module, name: str, inputs: Any, output: Any) -> None:
        layers.append(_activation(name, inputs, output))
        modules.append(module)

    if isinstance(model, torch.nn.Module):
        for name, module in model.named_modules():
            if name and not any(True for _ in module.children()):
                handles.append(
                    module.register_forward_hook(lambda m, inputs, output, name=name: record(m, name, inputs, output))
                )
    try:
        with torch.inference_mode():
            call()  # records layers; also warms up before the peak is taken
            recorded = tuple(layers)
            for handle in handles:
                handle.remove()
            handles = []
            peak = peak_memory_bytes(call, machine.device)
    finally:
        for handle in handles:
            handle.remove()
    weights = parameter_bytes(model) if isinstance(model, torch.nn.Module) else 0
    plan = plan_patches(model, list(recorded), modules[: len(recorded)]) if recorded else "no leaf layer ran"
    return MemoryProfile(
        peak_bytes=peak,
        parameter_bytes=weights,
        layers=recorded,
        device_memory_bytes=machine.memory_bytes,
        patch_plan=plan if isinstance(plan, PatchPlan) else None,
        no_patch_plan_reason=plan if isinstance(plan, str) else None,
    )


def hardware_passes(
    pipeline: Pipeline, data: ProfileData, machine: Machine, progress: Callable[[str], None] = lambda message: None
) -> ProfileData:
    """`data` with ops, memory and generation measured, for a pipeline whose model is a torch module.

    With `generate`, the generation pass runs first and the cost and memory passes measure the
    loop's first model call as the loop made it (an encoder-decoder's decoder call, keyword
    arguments and all); otherwise one call with the example batch. A pass that fails on an unusual
    model (an op the dispatch mode or the profiler cannot follow) is left out and named in
    data.extra["hardware_passes_skipped"]; the stage measurements and the other passes still make
    a report.
    """
    if not isinstance(pipeline.model, torch.nn.Module):
        return data
    batch = pipeline.example_batch()
    first_call: list[tuple[tuple, dict]] = []
    args, kwargs = split_call(batch)
    call: Callable[[], Any] = lambda: pipeline.model(*args, **kwargs)  # noqa: E731
    # The lambdas read `call`, `args` and `kwargs` when they run: after the generation pass has
    # replaced them with the loop's first call.
    passes: list[tuple[str, str, Callable[[], Any]]] = []
    if pipeline.generate is not None:
        passes.append(
            (
                "generation",
                "timing generation steps",
                lambda: generation_pass(pipeline, batch, machine, first_call=first_call),
            )
        )
    passes += [
        ("cost", "counting FLOPs and bytes per op", lambda: cost_pass(pipeline, call, machine)),
        ("memory", "measuring peak memory", lambda: memory_pass(pipeline, call, machine)),
        (
            "dtypes",
            "timing the model's layers in faster dtypes",
            lambda: dtype_pass(
                pipeline, args, kwargs, machine, _dtypes_worth_timing(found.get("ops"), machine, pipeline.model)
            ),
        ),
    ]
    skipped = {}
    found: dict[str, Any] = {}
    for name, message, run in passes:
        progress(message)
        try:
            result = run()
        except Exception as exc:  # noqa: BLE001 - a user model's failure in one pass must not lose the profile
            skipped[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            continue
        found[{"cost": "ops", "dtypes": "dtype_timings"}.get(name, name)] = result
        if name == "generation" and first_call:
            args, kwargs = first_call[0]
            call = lambda: pipeline.model(*args, **kwargs)  # noqa: E731
    extra = {**data.extra, "hardware_passes_skipped": skipped} if skipped else data.extra
    return dataclasses.replace(data, extra=extra, **found)


# The dtype pass runs when compute-bound ops take at least this share of the call: below it, no
# faster unit can save much and compute_bound reports nothing.
MIN_COMPUTE_SHARE_TO_TIME = 0.3


def _dtypes_worth_timing(cost: CostModel | None, machine: Machine, model: Any) -> list[str]:
    if not isinstance(cost, CostModel) or cost.call_seconds <= 0:
        return []
    split = split_roofline(cost)
    if split.share(split.compute_seconds) < MIN_COMPUTE_SHARE_TO_TIME:
        return []
    has_linear = any(isinstance(m, torch.nn.Linear) for m in model.modules())
    return [name for name in faster_dtypes(machine) if name != "int8" or (has_linear and not machine.is_cuda)]
