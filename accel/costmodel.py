"""The per-op cost model: what each aten op computes and moves (accel.counts) joined to what it took.

Op times come from torch.profiler in a pass of its own, apart from the light timing pass, rather
than from timing each op inside the counting dispatch mode: a Python dispatch mode adds tens of
microseconds to every op, which would bury exactly the short ops the overhead finding is about,
while the profiler's C++ hooks add about a microsecond. The counting pass and the profiler pass
see the same ops: each profiler event whose name is a counted op (outermost such event, so
aten::addmm under aten::linear) is matched to the k-th counted op of that name.

For each op: arithmetic intensity (FLOPs per byte), roofline time (the larger of FLOPs over the
peak FLOP/s of its dtype and bytes over peak bandwidth), and the achieved fraction (roofline time
over measured time). Ops and modules (layers) are aggregated for the report.
"""
from __future__ import annotations

import dataclasses
import statistics
from collections import defaultdict
from typing import Any, Callable

import torch

from accel.counts import Counts, OpCount
from accel.machine import Machine

PROFILED_CALLS = 3
# An op is dispatch-bound when its roofline time is this short (a few microseconds is what
# PyTorch's eager dispatch costs per op on a CPU, and a kernel launch on a GPU)...
DISPATCH_ROOFLINE_SECONDS = 5e-6
# ...and it took this many times its roofline time: the hardware was mostly idle.
DISPATCH_OVER_ROOFLINE = 4.0
# "Short" ops for the overhead evidence: shorter than this they are mostly dispatch.
SHORT_OP_SECONDS = 10e-6
# Python and module glue cost some microseconds per op; time outside ops beyond this per op is the
# run-to-run difference between the profiled and the plain calls, not overhead.
OUTSIDE_OPS_PER_OP_SECONDS = 20e-6
CALL_MARKER = "accel::call"
# Per torch dtype name, the calibration entry whose peak applies to it.
DTYPE_PEAK_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "int8": "int8", "uint8": "int8"}


@dataclasses.dataclass(frozen=True)
class OpCost:
    """One op call: its counts, its measured seconds and where it sits on the roofline."""

    op: str
    module: str
    flops: int
    bytes_moved: int
    weight_bytes: int
    seconds: float
    roofline_seconds: float
    memory_bound: bool
    dtype: str = ""

    @property
    def flops_per_byte(self) -> float:
        return self.flops / self.bytes_moved if self.bytes_moved else 0.0

    @property
    def achieved_fraction(self) -> float:
        return min(self.roofline_seconds / self.seconds, 1.0) if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "flops_per_byte": self.flops_per_byte,
                "achieved_fraction": self.achieved_fraction}


@dataclasses.dataclass(frozen=True)
class CostGroup:
    """Ops summed by name or by module."""

    name: str
    calls: int
    flops: int
    bytes_moved: int
    weight_bytes: int
    seconds: float
    roofline_seconds: float
    memory_bound_seconds: float

    @property
    def flops_per_byte(self) -> float:
        return self.flops / self.bytes_moved if self.bytes_moved else 0.0

    @property
    def achieved_fraction(self) -> float:
        return min(self.roofline_seconds / self.seconds, 1.0) if self.seconds > 0 else 0.0

    @property
    def achieved_gbs(self) -> float:
        return self.bytes_moved / self.seconds / 1e9 if self.seconds > 0 else 0.0

    @property
    def achieved_gflops(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "flops_per_byte": self.flops_per_byte,
                "achieved_fraction": self.achieved_fraction, "achieved_gbs": self.achieved_gbs,
                "achieved_gflops": self.achieved_gflops}


@dataclasses.dataclass(frozen=True)
class CostModel:
    """All ops of one model call, with the call's own time from the timing pass."""

    ops: tuple[OpCost, ...]
    call_seconds: float  # one model call, from the light timing pass
    peak_bandwidth_gbs: float
    peak_gflops: float

    @property
    def ops_seconds(self) -> float:
        return sum(o.seconds for o in self.ops)

    @property
    def outside_ops_seconds(self) -> float:
        """Time of a call spent outside aten ops: Python, module hooks, framework glue."""
        return max(self.call_seconds - self.ops_seconds, 0.0)

    @property
    def flops(self) -> int:
        return sum(o.flops for o in self.ops)

    @property
    def bytes_moved(self) -> int:
        return sum(o.bytes_moved for o in self.ops)

    @property
    def weight_bytes(self) -> int:
        return sum(o.weight_bytes for o in self.ops)

    @property
    def roofline_seconds(self) -> float:
        return sum(o.roofline_seconds for o in self.ops)

    def by_op(self) -> list[CostGroup]:
        return _group(self.ops, lambda o: o.op)

    def by_layer(self) -> list[CostGroup]:
        return _group(self.ops, lambda o: o.module)

    def to_dict(self) -> dict[str, Any]:
        return {"call_seconds": self.call_seconds, "ops_seconds": self.ops_seconds,
                "outside_ops_seconds": self.outside_ops_seconds, "op_count": len(self.ops), "flops": self.flops,
                "bytes_moved": self.bytes_moved, "weight_bytes": self.weight_bytes,
                "roofline_seconds": self.roofline_seconds, "peak_bandwidth_gbs": self.peak_bandwidth_gbs,
                "peak_gflops": self.peak_gflops}


@dataclasses.dataclass(frozen=True)
class RooflineSplit:
    """A model call's seconds split by what limits each op; fractions of the unprofiled call time."""

    call_seconds: float
    dispatch_seconds: float  # in dispatch-bound ops
    dispatch_roofline_seconds: float
    outside_ops_seconds: float
    memory_seconds: float  # in memory-bound ops that are not dispatch-bound
    compute_seconds: float  # in compute-bound ops that are not dispatch-bound
    memory_bytes: int
    memory_weight_bytes: int
    compute_flops: int

    def share(self, seconds: float) -> float:
        return min(seconds / self.call_seconds, 1.0) if self.call_seconds > 0 else 0.0

    @property
    def overhead_seconds(self) -> float:
        """Time above the roofline in dispatch-bound ops, plus time outside ops."""
        return max(self.dispatch_seconds - self.dispatch_roofline_seconds, 0.0) + self.outside_ops_seconds


def is_dispatch_bound(op: OpCost) -> bool:
    return op.roofline_seconds < DISPATCH_ROOFLINE_SECONDS and op.seconds > DISPATCH_OVER_ROOFLINE * op.roofline_seconds


def split_roofline(cost: CostModel) -> RooflineSplit:
    dispatch = [o for o in cost.ops if is_dispatch_bound(o)]
    rest = [o for o in cost.ops if not is_dispatch_bound(o)]
    memory = [o for o in rest if o.memory_bound]
    compute = [o for o in rest if not o.memory_bound]
    return RooflineSplit(call_seconds=cost.call_seconds, dispatch_seconds=sum(o.seconds for o in dispatch),
                         dispatch_roofline_seconds=sum(o.roofline_seconds for o in dispatch),
                         outside_ops_seconds=min(cost.outside_ops_seconds, OUTSIDE_OPS_PER_OP_SECONDS * len(cost.ops)),
                         memory_seconds=sum(o.seconds for o in memory), compute_seconds=sum(o.seconds for o in compute),
                         memory_bytes=sum(o.bytes_moved for o in memory),
                         memory_weight_bytes=sum(o.weight_bytes for o in memory),
                         compute_flops=sum(o.flops for o in compute))


def _group(ops: tuple[OpCost, ...], key: Callable[[OpCost], str]) -> list[CostGroup]:
    buckets: dict[str, list[OpCost]] = defaultdict(list)
    for op in ops:
        buckets[key(op)].append(op)
    groups = [CostGroup(name=name, calls=len(items), flops=sum(o.flops for o in items),
                        bytes_moved=sum(o.bytes_moved for o in items), weight_bytes=sum(o.weight_bytes for o in items),
                        seconds=sum(o.seconds for o in items),
                        roofline_seconds=sum(o.roofline_seconds for o in items),
                        memory_bound_seconds=sum(o.seconds for o in items if o.memory_bound))
              for name, items in buckets.items()]
    return sorted(groups, key=lambda g: -g.seconds)


def peak_gflops_for(machine: Machine, dtype: str) -> float:
    by_dtype = machine.peak_gflops_by_dtype or {}
    name = DTYPE_PEAK_NAMES.get(dtype, "fp32")
    return by_dtype.get(name) or machine.peak_gflops or by_dtype.get("fp32") or 0.0


def roofline_seconds(flops: int, bytes_moved: int, peak_gflops: float, peak_bandwidth_gbs: float) -> float:
    compute = flops / (peak_gflops * 1e9) if peak_gflops > 0 else 0.0
    memory = bytes_moved / (peak_bandwidth_gbs * 1e9) if peak_bandwidth_gbs > 0 else 0.0
    return max(compute, memory)


def _outermost_matches(event: Any, names: set[str], found: list[Any]) -> None:
    for child in sorted(event.cpu_children, key=lambda c: c.time_range.start):
        if child.name in names:
            found.append(child)
        else:
            _outermost_matches(child, names, found)


def profile_op_seconds(fn: Callable[[], Any], counts: Counts, *, device: str = "cpu",
                       calls: int = PROFILED_CALLS) -> list[float]:
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


def build_cost_model(counts: Counts, op_seconds: list[float], machine: Machine, call_seconds: float) -> CostModel:
    """Join counts and op times against the machine's peaks. Pure: no timing here."""
    bandwidth = machine.peak_bandwidth_gbs or 0.0
    # The profiler adds about a microsecond per op; where the profiled ops add up to more than the
    # unprofiled call, they are scaled down to it, so every op time is a part of the real call.
    profiled = sum(op_seconds)
    if profiled > call_seconds > 0:
        op_seconds = [s * call_seconds / profiled for s in op_seconds]
    ridge_by_dtype: dict[str, float] = {}
    costs = []
    for op, seconds in zip(counts.ops, op_seconds):
        peak = peak_gflops_for(machine, op.dtype)
        ridge = ridge_by_dtype.setdefault(op.dtype, peak / bandwidth if bandwidth else 0.0)
        costs.append(OpCost(op=op.op, module=op.module, flops=op.flops, bytes_moved=op.bytes_moved,
                            weight_bytes=op.weight_bytes, seconds=seconds,
                            roofline_seconds=roofline_seconds(op.flops, op.bytes_moved, peak, bandwidth),
                            memory_bound=op.flops_per_byte < ridge, dtype=op.dtype))
    return CostModel(ops=tuple(costs), call_seconds=call_seconds, peak_bandwidth_gbs=bandwidth,
                     peak_gflops=machine.peak_gflops or 0.0)
