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

import dataclasses
import statistics
from collections import defaultdict
from typing import Any, Callable

import torch

from accel.core.budget import Deadline, PassBudget
from accel.core.counts import Counts, OpCount, parameter_bytes
from accel.core.machine import Machine
from accel.core.measure import device_sync, now, peak_memory_bytes
from accel.core.pipeline import Pipeline, split_call, tensors_in
from accel.core.steady import CpuMeter
from accel.profiling.costmodel import CALL_MARKER, PROFILED_CALLS, CostModel, build_cost_model
from accel.profiling.count_cache import cached_counts
from accel.profiling.data import LayerActivation, MemoryProfile, PatchPlan, ProfileData
from accel.profiling.dtype_pass import dtype_pass, dtypes_worth_timing
from accel.profiling.generation import generation_pass
from accel.profiling.partial import PassesInterrupted
from accel.profiling.patch_plan import plan_patches

# Plain (unprofiled) calls the cost pass wants beside its profiled ones, where the budget holds them.
PLAIN_CALLS = 5
# The passes' weights in a profile's budget (accel.core.measure.Deadline): the stage timing is what
# every finding reads; the cost pass holds the op times; the dtype pass times two or three variants.
# Passes a profile can do without: where not one model call fits in what is left of the budget they
# are not run (said in the budget note), so a slow model's profile ends near its budget rather than
# one or more calls past it for each pass (a BERT-base at 15 s a call on a busy machine: 100 s for 20).
OPTIONAL_PASSES = ("memory", "dtypes")
PASS_WEIGHTS = {"stages": 0.3, "generation": 0.2, "cost": 0.25, "memory": 0.1, "dtypes": 0.25, "trace": 0.05}


def _bytes(value: Any) -> int:
    return sum(t.numel() * t.element_size() for t in tensors_in(value))


def _outermost_matches(event: Any, names: set[str], found: list[Any]) -> None:
    for child in sorted(event.cpu_children, key=lambda c: c.time_range.start):
        if child.name in names:
            found.append(child)
        else:
            _outermost_matches(child, names, found)


@dataclasses.dataclass(frozen=True)
class ProfiledOps:
    """Op times of profiled calls, and per profiled call its own seconds and its ops' total."""

    op_seconds: list[float]  # per counted op, median over the profiled calls
    call_seconds: tuple[float, ...]  # each profiled call, start to end
    ops_seconds: tuple[float, ...]  # each profiled call, its counted ops' seconds summed


def profile_ops(
    fn: Callable[[], Any], counts: Counts, *, device: str = "cpu", calls: int = PROFILED_CALLS, warmup: bool = True
) -> ProfiledOps:
    """Profile `calls` calls of `fn` (after a warm-up call unless `warmup` is False): each counted
    op's seconds, and each call's own seconds beside its ops' (the same calls measure both)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    from accel.core.profiler_notes import quiet_profiler

    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    names = {o.op for o in counts.ops}
    if warmup:
        fn()  # first calls allocate and choose kernels
    if cuda:
        torch.cuda.synchronize()
    with quiet_profiler(profile(activities=activities)) as prof:
        for _ in range(calls):
            with record_function(CALL_MARKER):
                fn()
            if cuda:
                torch.cuda.synchronize()
    per_call = []
    markers = [e for e in prof.events() if e.name == CALL_MARKER]
    for marker in markers:
        found: list[Any] = []
        _outermost_matches(marker, names, found)
        per_call.append(found)
    return ProfiledOps(
        op_seconds=_join(counts.ops, per_call, cuda),
        call_seconds=tuple(m.cpu_time_total / 1e6 for m in markers),
        ops_seconds=tuple(sum(_event_seconds(e, cuda) for e in events) for events in per_call),
    )


def start_profiler() -> None:
    """Start torch.profiler once, on nothing: its first start in a process (Kineto's set-up) takes
    seconds on a loaded machine, a start-up cost like an import, kept out of the passes' budget."""
    from torch.profiler import ProfilerActivity, profile

    from accel.core.profiler_notes import quiet_profiler

    with quiet_profiler(profile(activities=[ProfilerActivity.CPU])):
        pass


def profile_op_seconds(
    fn: Callable[[], Any], counts: Counts, *, device: str = "cpu", calls: int = PROFILED_CALLS
) -> list[float]:
    """Seconds of each counted op (in the order of `counts.ops`), median over `calls` profiled calls."""
    return profile_ops(fn, counts, device=device, calls=calls).op_seconds


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


def cost_pass(
    pipeline: Pipeline,
    call: Callable[[], Any],
    machine: Machine,
    call_args: tuple[tuple, dict] = ((), {}),
    budget: PassBudget | None = None,
) -> CostModel:
    """Counts (cached, accel.profiling.count_cache), op times and the plain time of `call`, one
    model call with `call_args`: one plain call, then as many profiled and plain calls as `budget`
    holds (PROFILED_CALLS and PLAIN_CALLS wanted, one profiled call at least)."""
    budget = budget or PassBudget("cost", float("inf"))
    sync = device_sync(machine.device)
    with torch.inference_mode():
        counts, cached = cached_counts(call, pipeline.model, *call_args)
        budget.calls += 0 if cached else 1
        plain: list[float] = []
        # The model is warm (earlier passes called it): where one more call does not fit beside the
        # profiled one, the call time an earlier pass measured stands in for a plain call.
        first = budget.call_seconds or 0.0
        if not first or budget.fit(first, 2, minimum=1) >= 2:
            plain.append(_timed_call(call, sync))  # warm-up, timed: it sizes the calls below
            first = plain[0]
        profiled_calls = budget.fit(first, PROFILED_CALLS, minimum=1)
        meter = CpuMeter(torch.get_num_threads())
        profiled = meter.watch(
            lambda: profile_ops(call, counts, device=machine.device, calls=profiled_calls, warmup=False)
        )
        more = budget.fit(first, PLAIN_CALLS - len(plain), minimum=0)
        plain += [meter.watch(lambda: _timed_call(call, sync)) for _ in range(more)]
        budget.calls += profiled_calls + len(plain)
        plain = plain or [first]
    return build_cost_model(
        counts,
        profiled.op_seconds,
        machine,
        statistics.median(plain),
        profiled_call_seconds=profiled.call_seconds,
        profiled_ops_seconds=profiled.ops_seconds,
        call_samples=tuple(plain),
        cpu_share=meter.share if not machine.is_cuda else None,
    )


def _timed_call(call: Callable[[], Any], sync: Callable[[], None]) -> float:
    began = now()
    call()
    sync()
    return now() - began


def _activation(name: str, inputs: Any, output: Any) -> LayerActivation:
    first = tensors_in(inputs)
    shape = tuple(first[0].shape) if first else ()
    return LayerActivation(name=name, input_bytes=_bytes(inputs), output_bytes=_bytes(output), input_shape=shape)


def memory_pass(
    pipeline: Pipeline, call: Callable[[], Any], machine: Machine, budget: PassBudget | None = None
) -> MemoryProfile:
    """Peak memory of `call` (one model call), every leaf layer's activation, and the patch plan.

    Two calls where `budget` holds them (the layers recorded in a warm-up call, the peak taken in
    the next); one where it does not (layers and peak in the same, already warm, call)."""
    model = pipeline.model
    budget = budget or PassBudget("memory", float("inf"))
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
    call_seconds = budget.call_seconds or 0.0
    try:
        with torch.inference_mode():
            if budget.fit(call_seconds, 2, minimum=1) >= 2:
                call()  # records layers; also warms up before the peak is taken
                budget.calls += 1
                for handle in handles:
                    handle.remove()
                handles = []
            peak = peak_memory_bytes(call, machine.device)  # with the hooks still on where it is the only call
            budget.calls += 1
            recorded = tuple(layers)
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
    pipeline: Pipeline,
    data: ProfileData,
    machine: Machine,
    progress: Callable[[str], None] = lambda message: None,
    deadline: Deadline | None = None,
) -> ProfileData:
    """`data` with ops, memory and generation measured, for a pipeline whose model is a torch module.

    With `generate`, the generation pass runs first and the cost and memory passes measure the
    loop's first model call as the loop made it (an encoder-decoder's decoder call, keyword
    arguments and all); otherwise one call with the example batch. A pass that fails on an unusual
    model (an op the dispatch mode or the profiler cannot follow) is left out and named in
    data.extra["hardware_passes_skipped"]; the stage measurements and the other passes still make
    a report. Each pass runs within its share of `deadline` (none: no limit); the dtypes not timed
    and why are in data.extra["dtypes_not_timed"].
    """
    if not isinstance(pipeline.model, torch.nn.Module):
        return data
    deadline = deadline or Deadline(float("inf"), PASS_WEIGHTS)
    batch = pipeline.example_batch()
    first_call: list[tuple[tuple, dict]] = []
    args, kwargs = split_call(batch)
    call: Callable[[], Any] = lambda: pipeline.model(*args, **kwargs)  # noqa: E731
    not_timed: dict[str, str] = {}

    def time_dtypes(budget: PassBudget) -> Any:
        dtypes, why_not = dtypes_worth_timing(found.get("ops"), machine, pipeline.model)
        not_timed.update(why_not)
        return dtype_pass(pipeline, args, kwargs, machine, dtypes, budget)

    # The lambdas read `call`, `args` and `kwargs` when they run: after the generation pass has
    # replaced them with the loop's first call.
    passes: list[tuple[str, str, Callable[[PassBudget], Any]]] = []
    if pipeline.generate is not None:
        passes.append(
            (
                "generation",
                "timing generation steps",
                lambda budget: generation_pass(pipeline, batch, machine, first_call=first_call, budget=budget),
            )
        )
    passes += [
        (
            "cost",
            "counting FLOPs and bytes per op",
            lambda budget: cost_pass(pipeline, call, machine, (args, kwargs), budget),
        ),
        ("memory", "measuring peak memory", lambda budget: memory_pass(pipeline, call, machine, budget)),
        ("dtypes", "timing the model's layers in faster dtypes", time_dtypes),
    ]
    skipped: dict[str, str] = {}
    found: dict[str, Any] = {}
    for name, message, run in passes:
        if name in OPTIONAL_PASSES and deadline.call_seconds and deadline.left() < deadline.call_seconds:
            with deadline.run(name) as budget:
                budget.cut_short = True  # not run: not one call fits in what is left
            continue
        progress(message)
        try:
            with deadline.run(name) as budget:
                budget.call_seconds = deadline.call_seconds
                result = run(budget)
        except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: hand back the passes done so far
            raise PassesInterrupted(_measured(data, found, skipped, not_timed), name) from stop
        except Exception as exc:  # noqa: BLE001 - a user model's failure in one pass must not lose the profile
            skipped[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            continue
        found[{"cost": "ops", "dtypes": "dtype_timings"}.get(name, name)] = result
        if name == "cost" and isinstance(result, CostModel) and result.call_seconds > 0:
            deadline.call_seconds = result.call_seconds
        if name == "generation" and first_call:
            args, kwargs = first_call[0]
            call = lambda: pipeline.model(*args, **kwargs)  # noqa: E731
    return _measured(data, found, skipped, not_timed)


def _measured(
    data: ProfileData, found: dict[str, Any], skipped: dict[str, str], not_timed: dict[str, str]
) -> ProfileData:
    """`data` with the passes' results, those skipped and the dtypes not timed."""
    extra = dict(data.extra)
    if skipped:
        extra["hardware_passes_skipped"] = skipped
    if not_timed:
        extra["dtypes_not_timed"] = not_timed
    return dataclasses.replace(data, extra=extra, **found)
