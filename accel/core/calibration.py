"""Machine calibration: what this device can physically do and how fast the kernels the cures run
go on it; measured once, cached while it can be trusted.

- Peak memory bandwidth: a streaming copy (read + write) over a working set several times the
  last-level cache, so the copy runs from DRAM rather than from cache.
- Peak FLOP/s per dtype (`peak_gflops_by_dtype`): square GEMMs sized so one call takes tens of
  milliseconds; fp32, bf16, fp16 and int8 (torch._int_mm) where the device runs them. A dtype
  emulated in software comes out slow: what the units can do, not what a cure will get.
- Cure kernels (`cure_gflops`, accel.core.cure_kernels): the kernels the cures really run (fbgemm's
  dynamic quantized Linear, ONNX Runtime's float32 and int8 MatMul, bf16 and fp16 Linear) at one
  Linear layer's size. `Machine.best_cure_gflops(dtype)` and `cure_speedup(dtype)` read them.
- On CUDA the same GEMMs and Linear kernels run on the GPU, timed with CUDA events.

Noise: every figure is timed until its best calls agree (accel.core.steady), under a time cap. A
calibration is noisy (`noise_reason`) when a figure's calls still disagree by more than
SPREAD_LIMIT, when its threads ran less than MIN_CPU_SHARE of the time they were runnable (other
processes held the CPU), or when the 1-minute load average was above the usable cores. A noisy
calibration is cached flagged `noisy` and never used as if it were clean: the next use measures
again when the machine is quiet, or marks the machine `calibration_noisy`.

Cache check: before a cached calibration is used, a quick fp32 GEMM and copy (tenths of a second)
are compared with the same quick figures taken when it was measured; beyond CHECK_TOLERANCE on a
quiet machine, it is measured again (decide_cached holds the rule).

Results are cached as JSON under accel's cache root (accel.core.io.cache_root), keyed by device,
device name, core count, torch thread count, torch version, ISA flags and torch's CPU capability
(ATEN_CPU_CAPABILITY=avx2 on an AVX-512 CPU is another class, calibrated on its own); `accel calibrate` redoes it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch

from accel.core.calibration_measure import (
    copy_call,
    gemm_call,
    measure_bandwidth,
    measure_cure_kernels,
    measure_gemms,
    plan_for,
)
from accel.core.cure_kernels import KERNELS
from accel.core.dtypes import CALIBRATED as DTYPES
from accel.core.hashing import short_digest
from accel.core.io import cache_root, write_json_atomic
from accel.core.machine import Machine, describe_machine
from accel.core.measure import now
from accel.core.steady import BEST_OF, SPREAD_LIMIT, sample_until_steady, warmed_seconds

Progress = Callable[[str, float], None]  # (what is being measured, fraction done)

CALIBRATION_SCHEMA = "accel.calibration/2"
# Below this share of its runnable time actually run, a measurement shared the CPU with other
# processes: its figure is what was left over, not what the machine can do.
MIN_CPU_SHARE = 0.8
# The cache check: a GEMM and a copy small enough to take tenths of a second...
CHECK_GEMM_SIDE = 1024
CHECK_COPY_BYTES = 64 * 1024**2
CHECK_CAP_SECONDS = 0.3
# ...whose figures must agree with those taken at calibration within this fraction; a real change
# (another host behind the same CPU name, a power cap) moves them by more.
CHECK_TOLERANCE = 0.25


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Measured peaks and cure-kernel rates of one device, and how noisy their measurement was."""

    device: str
    peak_bandwidth_gbs: float
    peak_gflops_by_dtype: dict[str, float]
    working_set_bytes: int
    seconds: float
    cure_gflops: dict[str, float] = dataclasses.field(default_factory=dict)
    cure_rows: dict[str, int] = dataclasses.field(default_factory=dict)  # rows each kernel ran at
    cure_unavailable: dict[str, str] = dataclasses.field(default_factory=dict)  # kernel -> why not
    spreads: dict[str, float] = dataclasses.field(default_factory=dict)  # figure -> spread of its best calls
    cpu_shares: dict[str, float] = dataclasses.field(default_factory=dict)  # figure -> share of runnable time run
    load_average: float | None = None  # 1-minute, when calibration began
    cores: int = 0
    threads: int = 0
    check_gflops: float | None = None  # the cache check's figures, taken right after calibrating
    check_gbs: float | None = None
    noise_reason: str | None = None

    def __post_init__(self) -> None:
        if not self.peak_bandwidth_gbs > 0:
            raise ValueError(f"peak_bandwidth_gbs must be > 0, got {self.peak_bandwidth_gbs}")
        if "fp32" not in self.peak_gflops_by_dtype:
            raise ValueError("a calibration needs at least the fp32 peak")

    @property
    def noisy(self) -> bool:
        return self.noise_reason is not None

    @property
    def spread(self) -> float:
        """The largest spread of any figure's best calls."""
        return max(self.spreads.values(), default=0.0)

    @property
    def cpu_share(self) -> float | None:
        """The smallest share of its runnable time any figure's measurement ran."""
        return min(self.cpu_shares.values(), default=None)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": CALIBRATION_SCHEMA, **dataclasses.asdict(self), "noisy": self.noisy}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Calibration":
        if data.get("schema") != CALIBRATION_SCHEMA:
            raise ValueError(f"not an {CALIBRATION_SCHEMA} file")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def apply(self, machine: Machine) -> Machine:
        return dataclasses.replace(
            machine,
            peak_bandwidth_gbs=self.peak_bandwidth_gbs,
            peak_gflops=self.peak_gflops_by_dtype["fp32"],
            peak_gflops_by_dtype=dict(self.peak_gflops_by_dtype),
            cure_gflops=dict(self.cure_gflops),
            calibrated=True,
            calibration_noisy=self.noisy,
        )


def noise_reason(
    spreads: dict[str, float], cpu_shares: dict[str, float], load_average: float | None, cores: int
) -> str | None:
    """Why figures measured this way cannot be trusted for good; None when they can."""
    worst = max(spreads, key=lambda name: spreads[name], default=None)
    if worst is not None and spreads[worst] > SPREAD_LIMIT:
        return f"{worst} varied {spreads[worst]:.0%} over its best {BEST_OF} calls (limit {SPREAD_LIMIT:.0%})"
    # A kernel in its own runtime's pool competes with this process's spinning OpenMP threads: its
    # share says nothing about other processes (CureKernel.own_pool); its spread still counts.
    shared = {name: share for name, share in cpu_shares.items() if not (name in KERNELS and KERNELS[name].own_pool)}
    least = min(shared, key=lambda name: shared[name], default=None)
    if least is not None and shared[least] < MIN_CPU_SHARE:
        return (
            f"other processes held the CPU: {least} ran {cpu_shares[least]:.0%} of the time it was "
            f"runnable (needs {MIN_CPU_SHARE:.0%})"
        )
    if load_average is not None and cores and load_average > cores:
        return f"the 1-minute load average was {load_average:.1f} on {cores} usable cores"
    return None


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


# /proc/stat's per-CPU columns: user nice system idle iowait irq softirq steal (guest is in user).
_BUSY_COLUMNS = (0, 1, 2, 5, 6, 7)
_IDLE_COLUMNS = (3, 4)


def _cpu_ticks(cpus: set[int]) -> dict[int, tuple[int, int]]:
    """Per CPU of `cpus`, (busy, total) ticks since boot from /proc/stat."""
    ticks = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or not name[3:].isdigit() or int(name[3:]) not in cpus:
            continue
        values = [int(v) for v in fields[:8]]
        busy = sum(values[i] for i in _BUSY_COLUMNS)
        ticks[int(name[3:])] = (busy, busy + sum(values[i] for i in _IDLE_COLUMNS))
    return ticks


def busy_cores(seconds: float = 0.1) -> float | None:
    """The cores other work kept busy over the next `seconds` (steal included: the hypervisor gave
    them to someone else), summed over the CPUs this process may run on; None without /proc/stat.
    Read while this process waits, so it is the others' use now, where the 1-minute load average
    still counts the last minute's work, this process's own included (a benchmark that had just run
    two threads read a load of 2 on a quiet 2-core machine)."""
    try:
        cpus = set(os.sched_getaffinity(0))
        before = _cpu_ticks(cpus)
        time.sleep(seconds)
        after = _cpu_ticks(cpus)
    except (AttributeError, OSError, ValueError):
        return None
    shares = []
    for cpu, (busy, total) in after.items():
        if cpu in before and total > before[cpu][1]:
            shares.append((busy - before[cpu][0]) / (total - before[cpu][1]))
    return sum(shares) if shares else None


def cache_dir() -> Path:
    return cache_root()


def cache_path(machine: Machine) -> Path:
    key = (
        f"{machine.device}|{machine.device_name}|{machine.cores}|{machine.threads}|{machine.torch_version}"
        f"|{','.join(machine.isa_flags)}|{machine.cpu_capability}"
    )
    digest = short_digest(key)
    return cache_dir() / f"calibration-{machine.device.replace(':', '')}-{digest}.json"


@dataclasses.dataclass(frozen=True)
class Check:
    """The cache check's figures: a small fp32 GEMM and copy, and how busy the machine was."""

    gflops: float
    gbs: float
    cpu_share: float | None
    load_average: float | None
    cores: int


def quick_check(machine: Machine) -> Check:
    """A small fp32 GEMM and copy, timed until steady under CHECK_CAP_SECONDS."""
    device = machine.device
    gemm = gemm_call(torch.float32, CHECK_GEMM_SIDE, device)
    copy, moved = copy_call(device, CHECK_COPY_BYTES)
    for call in (gemm, copy):
        warmed_seconds(call, device)
    got = sample_until_steady(
        {"gemm": gemm, "copy": copy}, cap_seconds=CHECK_CAP_SECONDS, device=device, threads=machine.threads
    )
    shares = [s.cpu_share for s in got.values() if s.cpu_share is not None]
    on_cpu = device == "cpu"
    return Check(
        gflops=2 * CHECK_GEMM_SIDE**3 / got["gemm"].best_seconds / 1e9,
        gbs=moved / got["copy"].best_seconds / 1e9,
        cpu_share=min(shares) if shares and on_cpu else None,
        load_average=load_average() if on_cpu else None,
        cores=machine.cores,
    )


def calibrate(machine: Machine | None = None, *, quick: bool = False, progress: Progress | None = None) -> Calibration:
    """Measure peak bandwidth, peak FLOP/s per dtype and the cure kernels' rates on `machine`'s device."""
    machine = machine or describe_machine()
    report = progress or (lambda message, fraction: None)
    device, threads, on_cpu = machine.device, machine.threads, machine.device == "cpu"
    load = load_average()
    began = now()
    plan = plan_for(machine, quick)
    report(f"memory bandwidth ({plan.working_set_bytes / 1024**2:.0f} MiB streaming copy)", 0.0)
    bandwidth, steadies = measure_bandwidth(device, plan, threads)
    names = list(DTYPES)
    peaks, got = measure_gemms(
        device,
        plan,
        threads,
        lambda name: report(f"peak GFLOP/s, {name} GEMM", 0.1 + 0.4 * names.index(name) / len(names)),
    )
    steadies.update(got)
    report("the cures' kernels (int8 fbgemm and ONNX Runtime, bf16/fp16 Linear)", 0.5)
    rates, rows, unavailable, got = measure_cure_kernels(device, plan, threads)
    steadies.update(got)
    report("cache check figures", 0.95)
    check = quick_check(machine)
    spreads = {name: steady.spread for name, steady in steadies.items()}
    shares = {name: s.cpu_share for name, s in steadies.items() if s.cpu_share is not None and on_cpu}
    report("done", 1.0)
    return Calibration(
        device=device,
        peak_bandwidth_gbs=bandwidth,
        peak_gflops_by_dtype=peaks,
        working_set_bytes=plan.working_set_bytes,
        seconds=now() - began,
        cure_gflops=rates,
        cure_rows=rows,
        cure_unavailable=unavailable,
        spreads=spreads,
        cpu_shares=shares,
        load_average=load,
        cores=machine.cores,
        threads=threads,
        check_gflops=check.gflops,
        check_gbs=check.gbs,
        noise_reason=noise_reason(spreads, shares, load if on_cpu else None, machine.cores),
    )


def load_cached(machine: Machine) -> Calibration | None:
    path = cache_path(machine)
    try:
        return Calibration.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        return None


@dataclasses.dataclass(frozen=True)
class CacheDecision:
    """Whether a cached calibration is used as it is, and why."""

    use_cached: bool
    reason: str


def decide_cached(cached: Calibration, check: Check) -> CacheDecision:
    """Use the cached calibration, or measure again? Measuring again on a busy machine would be no
    better than the cache, so it is only done on a quiet one: when the cache is noisy, lacks the
    check figures, or the check now disagrees with them beyond CHECK_TOLERANCE."""
    shares = {"the cache check": check.cpu_share} if check.cpu_share is not None else {}
    busy = noise_reason({}, shares, check.load_average, check.cores)
    if busy is not None:
        return CacheDecision(True, f"cached calibration kept: the machine is busy now ({busy})")
    if cached.noisy:
        return CacheDecision(
            False, f"the cached calibration was noisy ({cached.noise_reason}); the machine is quiet now"
        )
    if not cached.check_gflops or not cached.check_gbs:
        return CacheDecision(False, "the cached calibration has no check figures")
    missing = sorted(set(KERNELS) - set(cached.cure_gflops) - set(cached.cure_unavailable))
    if cached.cure_gflops and missing:
        return CacheDecision(False, f"the cached calibration lacks the cure kernels {', '.join(missing)}")
    for what, measured, then in (
        ("fp32 GEMM", check.gflops, cached.check_gflops),
        ("copy", check.gbs, cached.check_gbs),
    ):
        if abs(measured / then - 1) > CHECK_TOLERANCE:
            return CacheDecision(
                False, f"the cache check's {what} now runs at {measured / then:.2f}x the cached figure"
            )
    return CacheDecision(True, "the cache check agrees with the cached calibration")


def calibrated_machine(
    machine: Machine | None = None, *, recalibrate: bool = False, quick: bool = False, progress: Progress | None = None
) -> Machine:
    """`machine` with its peaks filled in: from the cache when decide_cached keeps it, else measured
    now and cached (a noisy calibration cached flagged, see the module docstring)."""
    machine = machine or describe_machine()
    cached = None if recalibrate else load_cached(machine)
    if cached is not None:
        decision = decide_cached(cached, quick_check(machine))
        if decision.use_cached:
            return cached.apply(machine)
        if progress is not None:
            progress(f"calibrating again: {decision.reason}", 0.0)
    return calibrate_and_cache(machine, quick=quick, progress=progress).apply(machine)


def calibrate_and_cache(machine: Machine, *, quick: bool = False, progress: Progress | None = None) -> Calibration:
    """Measure `machine` now and cache the result (flagged when noisy); what `accel calibrate` runs."""
    calibration = calibrate(machine, quick=quick, progress=progress)
    write_json_atomic(cache_path(machine), calibration.to_dict())
    return calibration
