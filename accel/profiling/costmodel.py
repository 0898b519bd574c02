"""The per-op cost model: what each aten op computes and moves (accel.core.counts) joined to what it took.

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
from collections import defaultdict
from typing import Any, Callable

from accel.core.counts import Counts, OpCount
from accel.core.dtypes import short_name
from accel.core.machine import Machine

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
# The op times and the call time disagree (CostModel.timing_disagreement) when the profiled calls'
# op totals differ by more than this factor (a quiet machine repeats them within 10-20%)...
OP_TIME_SPREAD_LIMIT = 1.5
# ...or when the profiled calls took this many times longer or shorter than the plain calls: the
# profiler adds about a microsecond per op, far less than this on any model worth profiling...
CALL_TIME_LIMIT = 1.5
# ...or when the pass's threads ran less than this share of the time they were runnable (the
# scheduler's own accounting, accel.core.steady.CpuMeter): on a busy machine an intra-op thread
# waits for a core, every OpenMP region waits for it, and a 0.5 ms call takes 16-24 ms in some calls
# and not in others, while the profiler's op times do not see the wait. The same limit as
# calibration's (accel.core.calibration.MIN_CPU_SHARE).
MIN_CPU_SHARE = 0.8


@dataclasses.dataclass(frozen=True)
class OpCost:
    """One op call: its counts (accel.core.counts), its measured seconds and where it sits on the roofline."""

    count: OpCount
    seconds: float
    roofline_seconds: float
    memory_bound: bool

    @property
    def op(self) -> str:
        return self.count.op

    @property
    def module(self) -> str:
        return self.count.module

    @property
    def flops(self) -> int:
        return self.count.flops

    @property
    def bytes_moved(self) -> int:
        return self.count.bytes_moved

    @property
    def weight_bytes(self) -> int:
        return self.count.weight_bytes

    @property
    def dtype(self) -> str:
        return self.count.dtype

    @property
    def flops_per_byte(self) -> float:
        return self.count.flops_per_byte

    @property
    def achieved_fraction(self) -> float:
        return min(self.roofline_seconds / self.seconds, 1.0) if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "module": self.module,
            "flops": self.flops,
            "bytes_moved": self.bytes_moved,
            "weight_bytes": self.weight_bytes,
            "seconds": self.seconds,
            "roofline_seconds": self.roofline_seconds,
            "memory_bound": self.memory_bound,
            "dtype": self.dtype,
            "flops_per_byte": self.flops_per_byte,
            "achieved_fraction": self.achieved_fraction,
        }


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
        return {
            **dataclasses.asdict(self),
            "flops_per_byte": self.flops_per_byte,
            "achieved_fraction": self.achieved_fraction,
            "achieved_gbs": self.achieved_gbs,
            "achieved_gflops": self.achieved_gflops,
        }


@dataclasses.dataclass(frozen=True)
class CostModel:
    """All ops of one model call, with the call's own time from the timing pass."""

    ops: tuple[OpCost, ...]
    call_seconds: float  # one model call, from the light timing pass
    peak_bandwidth_gbs: float
    peak_gflops: float
    call_samples: tuple[float, ...] = ()  # the plain calls' seconds
    profiled_call_seconds: tuple[float, ...] = ()  # each profiled call's own seconds...
    profiled_ops_seconds: tuple[float, ...] = ()  # ...and its counted ops' seconds, in the same call
    cpu_share: float | None = None  # share of their runnable time the pass's threads ran; None: not metered

    @property
    def timing_disagreement(self) -> str | None:
        """Why the op times and the call time cannot be read together, or None when they agree:
        the profiled calls' op totals differ by more than OP_TIME_SPREAD_LIMIT from one call to the
        next, the profiled calls ran CALL_TIME_LIMIT x longer or shorter than the plain ones, or the
        pass's threads ran less than MIN_CPU_SHARE of their runnable time. Each happens when other
        processes take the CPU during some calls and not others."""
        if self.cpu_share is not None and self.cpu_share < MIN_CPU_SHARE:
            return (
                f"the pass's threads ran {self.cpu_share:.0%} of the time they were runnable (other processes "
                f"held the cores; needs {MIN_CPU_SHARE:.0%}: fewer threads or a quieter machine)"
            )
        ops = [s for s in self.profiled_ops_seconds if s > 0]
        if len(ops) >= 2 and max(ops) > OP_TIME_SPREAD_LIMIT * min(ops):
            return (
                f"the ops of the profiled calls took {min(ops) * 1e3:.1f} to {max(ops) * 1e3:.1f} ms "
                f"(more than {OP_TIME_SPREAD_LIMIT:.1f}x apart)"
            )
        if self.profiled_call_seconds and self.call_seconds > 0:
            ordered = sorted(self.profiled_call_seconds)
            profiled = ordered[len(ordered) // 2]
            ratio = profiled / self.call_seconds
            if not 1 / CALL_TIME_LIMIT <= ratio <= CALL_TIME_LIMIT:
                return (
                    f"profiled calls took {profiled * 1e3:.1f} ms and plain calls "
                    f"{self.call_seconds * 1e3:.1f} ms ({ratio:.2f}x)"
                )
        return None

    @property
    def ops_seconds(self) -> float:
        return sum(o.seconds for o in self.ops)

    @property
    def outside_ops_seconds(self) -> float:
        """Time of a call spent outside aten ops: Python, module hooks, framework glue."""
        return max(self.call_seconds - self.ops_seconds, 0.0)

    @property
    def counts(self) -> Counts:
        return Counts(tuple(o.count for o in self.ops))

    @property
    def flops(self) -> int:
        return self.counts.flops

    @property
    def bytes_moved(self) -> int:
        return self.counts.bytes_moved

    @property
    def weight_bytes(self) -> int:
        return self.counts.weight_bytes

    @property
    def roofline_seconds(self) -> float:
        return sum(o.roofline_seconds for o in self.ops)

    def by_op(self) -> list[CostGroup]:
        return _group(self.ops, lambda o: o.op)

    def by_layer(self) -> list[CostGroup]:
        return _group(self.ops, lambda o: o.module)

    def to_dict(self) -> dict[str, Any]:
        return {
            "call_seconds": self.call_seconds,
            "ops_seconds": self.ops_seconds,
            "outside_ops_seconds": self.outside_ops_seconds,
            "op_count": len(self.ops),
            "flops": self.flops,
            "bytes_moved": self.bytes_moved,
            "weight_bytes": self.weight_bytes,
            "roofline_seconds": self.roofline_seconds,
            "peak_bandwidth_gbs": self.peak_bandwidth_gbs,
            "peak_gflops": self.peak_gflops,
            "call_samples_seconds": list(self.call_samples),
            "profiled_call_seconds": list(self.profiled_call_seconds),
            "profiled_ops_seconds": list(self.profiled_ops_seconds),
            "cpu_share": self.cpu_share,
            "timing_disagreement": self.timing_disagreement,
        }


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
    return RooflineSplit(
        call_seconds=cost.call_seconds,
        dispatch_seconds=sum(o.seconds for o in dispatch),
        dispatch_roofline_seconds=sum(o.roofline_seconds for o in dispatch),
        outside_ops_seconds=min(cost.outside_ops_seconds, OUTSIDE_OPS_PER_OP_SECONDS * len(cost.ops)),
        memory_seconds=sum(o.seconds for o in memory),
        compute_seconds=sum(o.seconds for o in compute),
        memory_bytes=sum(o.bytes_moved for o in memory),
        memory_weight_bytes=sum(o.weight_bytes for o in memory),
        compute_flops=sum(o.flops for o in compute),
    )


def _group(ops: tuple[OpCost, ...], key: Callable[[OpCost], str]) -> list[CostGroup]:
    buckets: dict[str, list[OpCost]] = defaultdict(list)
    for op in ops:
        buckets[key(op)].append(op)
    groups = [
        CostGroup(
            name=name,
            calls=len(items),
            flops=sum(o.flops for o in items),
            bytes_moved=sum(o.bytes_moved for o in items),
            weight_bytes=sum(o.weight_bytes for o in items),
            seconds=sum(o.seconds for o in items),
            roofline_seconds=sum(o.roofline_seconds for o in items),
            memory_bound_seconds=sum(o.seconds for o in items if o.memory_bound),
        )
        for name, items in buckets.items()
    ]
    return sorted(groups, key=lambda g: -g.seconds)


def peak_gflops_for(machine: Machine, dtype: str) -> float:
    by_dtype = machine.peak_gflops_by_dtype or {}
    name = short_name(dtype) or "fp32"
    return by_dtype.get(name) or machine.peak_gflops or by_dtype.get("fp32") or 0.0


def roofline_seconds(flops: int, bytes_moved: int, peak_gflops: float, peak_bandwidth_gbs: float) -> float:
    compute = flops / (peak_gflops * 1e9) if peak_gflops > 0 else 0.0
    memory = bytes_moved / (peak_bandwidth_gbs * 1e9) if peak_bandwidth_gbs > 0 else 0.0
    return max(compute, memory)


def build_cost_model(
    counts: Counts,
    op_seconds: list[float],
    machine: Machine,
    call_seconds: float,
    *,
    call_samples: tuple[float, ...] = (),
    profiled_call_seconds: tuple[float, ...] = (),
    profiled_ops_seconds: tuple[float, ...] = (),
    cpu_share: float | None = None,
) -> CostModel:
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
        costs.append(
            OpCost(
                count=op,
                seconds=seconds,
                roofline_seconds=roofline_seconds(op.flops, op.bytes_moved, peak, bandwidth),
                memory_bound=op.flops_per_byte < ridge,
            )
        )
    return CostModel(
        ops=tuple(costs),
        call_seconds=call_seconds,
        peak_bandwidth_gbs=bandwidth,
        peak_gflops=machine.peak_gflops or 0.0,
        call_samples=tuple(call_samples),
        profiled_call_seconds=tuple(profiled_call_seconds),
        profiled_ops_seconds=tuple(profiled_ops_seconds),
        cpu_share=cpu_share,
    )
