"""The hardware passes of `accel profile`: cost model, memory and generation, each a separate run.

1. cost: count FLOPs and bytes per aten op (accel.counts), time the ops under torch.profiler
   (accel.costmodel), and time plain model calls with no profiler attached;
2. memory: peak tensor memory of one model call (accel.measure.peak_memory_bytes) and the input
   and output sizes of every leaf layer, in execution order;
3. generation (pipelines with `generate`): the seconds of every model call inside a generate
   loop (median over a few loops), against the length of the sequence that call saw.

Each pass returns plain data stored in ProfileData (ops, memory, generation); analyzers read it.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable

import torch

from accel.costmodel import CostModel, build_cost_model, profile_op_seconds
from accel.counts import count_forward, parameter_bytes
from accel.machine import Machine
from accel.measure import device_sync, peak_memory_bytes, time_calls
from accel.pipeline import Pipeline
from accel.stages import ProfileData

CALL_TIMING_BUDGET_SECONDS = 1.0
# The loop's first steps run at the prompt's length, the length the cost model's call saw.
FIRST_STEPS = 3
# Generate loops timed; each step's time is its median over them.
GENERATION_LOOPS = 3


@dataclasses.dataclass(frozen=True)
class LayerActivation:
    """One leaf layer's call: the bytes of its tensor inputs and outputs."""

    name: str
    input_bytes: int
    output_bytes: int

    @property
    def working_bytes(self) -> int:
        """Live while the layer runs: its input and its output."""
        return self.input_bytes + self.output_bytes


@dataclasses.dataclass(frozen=True)
class MemoryProfile:
    peak_bytes: int
    parameter_bytes: int
    layers: tuple[LayerActivation, ...]
    device_memory_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"peak_bytes": self.peak_bytes, "parameter_bytes": self.parameter_bytes,
                "device_memory_bytes": self.device_memory_bytes,
                "layers": [dataclasses.asdict(layer) | {"working_bytes": layer.working_bytes} for layer in self.layers]}


@dataclasses.dataclass(frozen=True)
class GenerationStep:
    position: int  # length of the sequence the model saw in this call
    seconds: float


@dataclasses.dataclass(frozen=True)
class GenerationProfile:
    steps: tuple[GenerationStep, ...]
    total_seconds: float
    parameter_bytes: int
    batch_size: int = 1

    @property
    def tokens_per_s(self) -> float:
        return len(self.steps) * self.batch_size / self.total_seconds if self.total_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [dataclasses.asdict(s) for s in self.steps], "total_seconds": self.total_seconds,
                "parameter_bytes": self.parameter_bytes, "batch_size": self.batch_size,
                "tokens_per_s": self.tokens_per_s}


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def _bytes(value: Any) -> int:
    return sum(t.numel() * t.element_size() for t in _tensors(value))


def cost_pass(pipeline: Pipeline, batch: Any, machine: Machine) -> CostModel:
    model = pipeline.model
    call = lambda: pipeline.call_model(batch)  # noqa: E731
    sync = device_sync(machine.device)
    with torch.inference_mode():
        counts = count_forward(call, model if isinstance(model, torch.nn.Module) else None)
        op_seconds = profile_op_seconds(call, counts, device=machine.device)
        call_seconds = time_calls(call, budget_seconds=CALL_TIMING_BUDGET_SECONDS, max_repeats=50, sync=sync).median
    return build_cost_model(counts, op_seconds, machine, call_seconds)


def memory_pass(pipeline: Pipeline, batch: Any, machine: Machine) -> MemoryProfile:
    model = pipeline.model
    layers: list[LayerActivation] = []
    handles = []
    if isinstance(model, torch.nn.Module):
        for name, module in model.named_modules():
            if name and not any(True for _ in module.children()):
                handles.append(module.register_forward_hook(
                    lambda _m, inputs, output, name=name: layers.append(
                        LayerActivation(name=name, input_bytes=_bytes(inputs), output_bytes=_bytes(output)))))
    try:
        with torch.inference_mode():
            pipeline.call_model(batch)  # records layers; also warms up before the peak is taken
            recorded = tuple(layers)
            for handle in handles:
                handle.remove()
            handles = []
            peak = peak_memory_bytes(lambda: pipeline.call_model(batch), machine.device)
    finally:
        for handle in handles:
            handle.remove()
    weights = parameter_bytes(model) if isinstance(model, torch.nn.Module) else 0
    return MemoryProfile(peak_bytes=peak, parameter_bytes=weights, layers=recorded,
                         device_memory_bytes=machine.memory_bytes)


def generation_pass(pipeline: Pipeline, batch: Any, machine: Machine,
                    clock: Callable[[], float] = time.perf_counter) -> GenerationProfile | None:
    """Time every model call inside GENERATION_LOOPS generate loops (after one untimed loop as warm-up)."""
    model = pipeline.model
    if pipeline.generate is None or not isinstance(model, torch.nn.Module):
        return None
    sync = device_sync(machine.device)
    steps: list[GenerationStep] = []
    started: list[tuple[float, int]] = []

    def before(_module, args, kwargs=None):
        tensors = _tensors((args, kwargs or {}))
        position = int(tensors[0].shape[-1]) if tensors and tensors[0].dim() else 0
        sync()
        started.append((clock(), position))

    def after(_module, _args, _output):
        sync()
        t0, position = started.pop()
        steps.append(GenerationStep(position=position, seconds=clock() - t0))

    loops: list[list[GenerationStep]] = []
    totals: list[float] = []
    with torch.inference_mode():
        pipeline.forward(batch)
        pre = model.register_forward_pre_hook(before)
        post = model.register_forward_hook(after)
        try:
            for _ in range(GENERATION_LOOPS):
                steps.clear()
                began = clock()
                pipeline.forward(batch)
                sync()
                totals.append(clock() - began)
                loops.append(list(steps))
        finally:
            pre.remove()
            post.remove()
    # Per step, the median over the loops: a step slowed by other load in one loop is outvoted.
    count = min(len(loop) for loop in loops)
    steps = [GenerationStep(position=loops[0][i].position,
                            seconds=statistics.median(loop[i].seconds for loop in loops)) for i in range(count)]
    total = statistics.median(totals)
    if not steps:
        return None
    first = _tensors(batch)
    batch_size = int(first[0].shape[0]) if first and first[0].dim() > 1 else 1
    return GenerationProfile(steps=tuple(steps), total_seconds=total, parameter_bytes=parameter_bytes(model),
                             batch_size=batch_size)


def share_of_model_time(data: ProfileData, seconds_per_call: float) -> float:
    """What `seconds_per_call` (a part of the cost model's one call) is of the model's time.

    In a generate loop the cost model saw one call at the prompt's length, timed apart from the
    loop, while the loop makes many calls at growing lengths. A cost per call (dispatch, weight
    reads) is taken as the same fraction of the loop's first steps (the calls of that length,
    timed in the loop) and weighed by the number of calls over the loop's time.
    """
    call = data.ops.call_seconds if data.ops is not None else 0.0
    if call <= 0:
        return 0.0
    fraction = min(seconds_per_call / call, 1.0)
    generation = data.generation
    if isinstance(generation, GenerationProfile) and generation.total_seconds > 0 and generation.steps:
        first_steps = sorted(s.seconds for s in generation.steps[:FIRST_STEPS])
        first = first_steps[len(first_steps) // 2]
        return min(fraction * first * len(generation.steps) / generation.total_seconds, 1.0)
    return fraction


def hardware_passes(pipeline: Pipeline, data: ProfileData, machine: Machine,
                    progress: Callable[[str], None] = lambda message: None) -> None:
    """Fill data.ops, data.memory and data.generation for a pipeline whose model is a torch module.

    A pass that fails on an unusual model (an op the dispatch mode or the profiler cannot follow)
    is left out and named in data.extra["hardware_passes_skipped"]; the stage measurements and the
    other passes still make a report.
    """
    if not isinstance(pipeline.model, torch.nn.Module):
        return
    batch = pipeline.example_batch()
    passes = [("cost", "counting FLOPs and bytes per op", lambda: cost_pass(pipeline, batch, machine)),
              ("memory", "measuring peak memory", lambda: memory_pass(pipeline, batch, machine))]
    if pipeline.generate is not None:
        passes.append(("generation", "timing generation steps", lambda: generation_pass(pipeline, batch, machine)))
    skipped = {}
    for name, message, run in passes:
        progress(message)
        try:
            result = run()
        except Exception as exc:  # noqa: BLE001 - a user model's failure in one pass must not lose the profile
            skipped[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            continue
        setattr(data, "ops" if name == "cost" else name, result)
    if skipped:
        data.extra["hardware_passes_skipped"] = skipped
