"""Machine calibration: what this device can physically do, measured once and cached.

- Peak memory bandwidth: a streaming copy (read + write) over a working set several times the
  last-level cache, so the copy runs from DRAM rather than from cache; the best of a few repeats.
- Peak FLOP/s per dtype: square GEMMs sized so one call takes tens of milliseconds (large enough to
  saturate the GEMM kernels, small enough to keep calibration short); fp32, bf16, fp16 and int8
  (torch._int_mm) where the device runs them. A dtype emulated in software comes out slow, which
  is the point: lower precision is recommended only where this device has faster units for it.
- On CUDA the same kernels run on the GPU, timed with CUDA events after a synchronize.

Results are cached as JSON under accel's cache root (accel.core.io.cache_root), keyed by device,
device name, core count, torch thread count and torch version; `accel calibrate` redoes it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable

import torch

from accel.core.dtypes import CALIBRATED as DTYPES
from accel.core.hashing import short_digest
from accel.core.io import cache_root, write_json_atomic
from accel.core.machine import Machine, describe_machine
from accel.core.measure import now

Progress = Callable[[str, float], None]  # (what is being measured, fraction done)

CALIBRATION_SCHEMA = "accel.calibration/1"
# The streaming copy's working set: at least this many times the last-level cache, so that neither
# source nor destination stays cached between repeats...
WORKING_SET_CACHE_MULTIPLE = 4
# ...and at least this much, for CPUs whose caches sysfs does not report, capped by device memory.
MIN_WORKING_SET_BYTES = 512 * 1024**2
QUICK_WORKING_SET_BYTES = 128 * 1024**2
BANDWIDTH_REPEATS = 5
# One GEMM call should take about this long: long enough that launch and threading costs vanish
# against it, short enough that five dtypes calibrate in seconds.
GEMM_TARGET_SECONDS = 0.05
GEMM_REPEATS = 6
GEMM_MIN_SIDE, GEMM_MAX_SIDE = 512, 8192


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Measured peaks of one device."""

    device: str
    peak_bandwidth_gbs: float
    peak_gflops_by_dtype: dict[str, float]
    working_set_bytes: int
    seconds: float

    def __post_init__(self) -> None:
        if not self.peak_bandwidth_gbs > 0:
            raise ValueError(f"peak_bandwidth_gbs must be > 0, got {self.peak_bandwidth_gbs}")
        if "fp32" not in self.peak_gflops_by_dtype:
            raise ValueError("a calibration needs at least the fp32 peak")

    def to_dict(self) -> dict[str, Any]:
        return {"schema": CALIBRATION_SCHEMA, **dataclasses.asdict(self)}

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
            calibrated=True,
        )


def cache_dir() -> Path:
    return cache_root()


def cache_path(machine: Machine) -> Path:
    key = f"{machine.device}|{machine.device_name}|{machine.cores}|{machine.threads}|{machine.torch_version}"
    digest = short_digest(key)
    return cache_dir() / f"calibration-{machine.device.replace(':', '')}-{digest}.json"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _best_seconds(fn: Callable[[], Any], device: str, repeats: int) -> float:
    """Best wall time of `fn` over `repeats` calls after one warm-up; CUDA events on a GPU."""
    fn()
    _sync(device)
    best = math.inf
    for _ in range(repeats):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1000.0
        else:
            t0 = now()
            fn()
            seconds = now() - t0
        best = min(best, seconds)
    return best


def working_set_bytes(machine: Machine, quick: bool = False) -> int:
    if quick:
        return QUICK_WORKING_SET_BYTES
    last_level = max(machine.cache_bytes.values(), default=0)
    wanted = max(WORKING_SET_CACHE_MULTIPLE * last_level, MIN_WORKING_SET_BYTES)
    if machine.memory_bytes:
        wanted = min(wanted, machine.memory_bytes // 8)
    return int(wanted)


def measure_bandwidth_gbs(device: str, size_bytes: int, repeats: int = BANDWIDTH_REPEATS) -> float:
    """Streaming copy: bytes read plus bytes written per second, best of `repeats`."""
    elements = size_bytes // 2 // 4  # source and destination together fill the working set
    source = torch.ones(elements, dtype=torch.float32, device=device)
    destination = torch.empty_like(source)
    seconds = _best_seconds(lambda: destination.copy_(source), device, repeats)
    return 2 * elements * 4 / seconds / 1e9


def _gemm(dtype: torch.dtype, side: int, device: str) -> Callable[[], Any]:
    if dtype == torch.int8:
        a = torch.randint(-64, 64, (side, side), dtype=torch.int8, device=device)
        b = torch.randint(-64, 64, (side, side), dtype=torch.int8, device=device)
        return lambda: torch._int_mm(a, b)
    a = torch.randn(side, side, device=device).to(dtype)
    b = torch.randn(side, side, device=device).to(dtype)
    return lambda: torch.mm(a, b)


def gemm_side(dtype: torch.dtype, device: str, target_seconds: float = GEMM_TARGET_SECONDS) -> int | None:
    """The GEMM side at which one call takes about `target_seconds`, or None where the device
    does not run `dtype`. The side doubles from GEMM_MIN_SIDE: small GEMMs are latency-bound and
    under-report, and a slow (emulated) dtype stops early, keeping calibration short."""
    side = GEMM_MIN_SIDE
    while side < GEMM_MAX_SIDE:
        try:
            seconds = _best_seconds(_gemm(dtype, side, device), device, 1)
        except (RuntimeError, NotImplementedError):
            return None
        if seconds >= target_seconds:
            break
        side *= 2
    return side


def measure_gemm_gflops(
    dtypes: dict[str, torch.dtype],
    device: str,
    rounds: int = GEMM_REPEATS,
    target_seconds: float = GEMM_TARGET_SECONDS,
    progress: Callable[[str], None] = lambda name: None,
) -> dict[str, float]:
    """Peak GFLOP/s per dtype. The dtypes take turns over `rounds` rounds and each keeps its best
    call, so a burst of load from other processes cannot favour one dtype over another."""
    calls: dict[str, tuple[Callable[[], Any], int]] = {}
    for name, dtype in dtypes.items():
        progress(name)
        side = gemm_side(dtype, device, target_seconds)
        if side is not None:
            calls[name] = (_gemm(dtype, side, device), side)
    best = {name: 0.0 for name in calls}
    for _ in range(rounds):
        for name, (call, side) in calls.items():
            seconds = _best_seconds(call, device, 1)
            best[name] = max(best[name], 2 * side**3 / seconds / 1e9)
    return best


def calibrate(machine: Machine | None = None, *, quick: bool = False, progress: Progress | None = None) -> Calibration:
    """Measure peak bandwidth and peak FLOP/s per dtype on `machine`'s device."""
    machine = machine or describe_machine()
    report = progress or (lambda message, fraction: None)
    device = machine.device
    began = now()
    size = working_set_bytes(machine, quick)
    steps = 1 + len(DTYPES)
    report(f"memory bandwidth ({size / 1024**2:.0f} MiB streaming copy)", 0.0)
    bandwidth = measure_bandwidth_gbs(device, size, repeats=3 if quick else BANDWIDTH_REPEATS)
    names = list(DTYPES)
    peaks = measure_gemm_gflops(
        DTYPES,
        device,
        rounds=2 if quick else GEMM_REPEATS,
        target_seconds=GEMM_TARGET_SECONDS / (4 if quick else 1),
        progress=lambda name: report(f"peak GFLOP/s, {name} GEMM", (1 + names.index(name)) / steps),
    )
    report("done", 1.0)
    return Calibration(
        device=device,
        peak_bandwidth_gbs=bandwidth,
        peak_gflops_by_dtype=peaks,
        working_set_bytes=size,
        seconds=now() - began,
    )


def load_cached(machine: Machine) -> Calibration | None:
    path = cache_path(machine)
    try:
        return Calibration.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def calibrated_machine(
    machine: Machine | None = None, *, recalibrate: bool = False, quick: bool = False, progress: Progress | None = None
) -> Machine:
    """`machine` with its peaks filled in: from the cache, or measured now and cached."""
    machine = machine or describe_machine()
    calibration = None if recalibrate else load_cached(machine)
    if calibration is None:
        calibration = calibrate(machine, quick=quick, progress=progress)
        write_json_atomic(cache_path(machine), calibration.to_dict())
    return calibration.apply(machine)
