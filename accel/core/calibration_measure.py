"""Calibration's measurements: the streaming copy, the square GEMMs sized to a target time, the
cure kernels, each timed until steady (accel.core.steady) under its phase's time cap. What makes a
calibration trustworthy, and its cache, are in accel.core.calibration.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from accel.core import cure_kernels
from accel.core.dtypes import CALIBRATED as DTYPES
from accel.core.machine import Machine
from accel.core.steady import Steady, sample_until_steady, warmed_seconds

# The streaming copy's working set: at least this many times the last-level cache, so that neither
# source nor destination stays cached between repeats...
WORKING_SET_CACHE_MULTIPLE = 4
# ...and at least this much, for CPUs whose caches sysfs does not report, capped by device memory.
MIN_WORKING_SET_BYTES = 512 * 1024**2
QUICK_WORKING_SET_BYTES = 128 * 1024**2
# One GEMM call should take about this long: long enough that launch and threading costs vanish
# against it, short enough that four dtypes calibrate in a couple of seconds.
GEMM_TARGET_SECONDS = 0.03
GEMM_MIN_SIDE, GEMM_MAX_SIDE = 256, 8192
# Time caps per phase (seconds of timed calls; every figure still gets BEST_OF calls): together
# with building the kernels a calibration stays under ten seconds on a loaded 2-core machine.
BANDWIDTH_CAP_SECONDS = 0.5
GEMM_CAP_SECONDS = 1.5
KERNEL_CAP_SECONDS = 1.5
QUICK_CAP_FACTOR = 0.4  # --quick: shorter caps, a smaller working set


def working_set_bytes(machine: Machine, quick: bool = False) -> int:
    if quick:
        return QUICK_WORKING_SET_BYTES
    last_level = max(machine.cache_bytes.values(), default=0)
    wanted = max(WORKING_SET_CACHE_MULTIPLE * last_level, MIN_WORKING_SET_BYTES)
    if machine.memory_bytes:
        wanted = min(wanted, machine.memory_bytes // 8)
    return int(wanted)


def copy_call(device: str, size_bytes: int) -> tuple[Callable[[], Any], int]:
    """A streaming copy over `size_bytes` (source and destination together), and the bytes it moves."""
    elements = size_bytes // 2 // 4
    source = torch.ones(elements, dtype=torch.float32, device=device)
    destination = torch.empty_like(source)
    return (lambda: destination.copy_(source)), 2 * elements * 4


def gemm_call(dtype: torch.dtype, side: int, device: str) -> Callable[[], Any]:
    generator = torch.Generator().manual_seed(0)
    if dtype == torch.int8:
        a = torch.randint(-64, 64, (side, side), dtype=torch.int8, generator=generator).to(device)
        b = torch.randint(-64, 64, (side, side), dtype=torch.int8, generator=generator).to(device)
        return lambda: torch._int_mm(a, b)
    a = torch.randn(side, side, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(side, side, generator=generator).to(device=device, dtype=dtype)
    return lambda: torch.mm(a, b)


def sized_gemm(
    dtype: torch.dtype, device: str, target_seconds: float = GEMM_TARGET_SECONDS
) -> tuple[Callable[[], Any], int] | None:
    """A warmed-up GEMM call whose side makes it take about `target_seconds`, and that side; None
    where the device does not run `dtype`. The side doubles from GEMM_MIN_SIDE: small GEMMs are
    latency-bound and under-report, and a slow (emulated) dtype stops early, keeping calibration short."""
    side = GEMM_MIN_SIDE
    while True:
        try:
            call = gemm_call(dtype, side, device)
            seconds = warmed_seconds(call, device)
        except (RuntimeError, NotImplementedError):
            return None
        if seconds >= target_seconds or side * 2 > GEMM_MAX_SIDE:
            return call, side
        side *= 2


@dataclasses.dataclass(frozen=True)
class Plan:
    """How long each phase may time its calls."""

    working_set_bytes: int
    bandwidth_cap: float
    gemm_cap: float
    kernel_cap: float
    gemm_target: float
    kernel_rows: int


def plan_for(machine: Machine, quick: bool) -> Plan:
    factor = QUICK_CAP_FACTOR if quick else 1.0
    return Plan(
        working_set_bytes=working_set_bytes(machine, quick),
        bandwidth_cap=BANDWIDTH_CAP_SECONDS * factor,
        gemm_cap=GEMM_CAP_SECONDS * factor,
        kernel_cap=KERNEL_CAP_SECONDS * factor,
        gemm_target=GEMM_TARGET_SECONDS * factor,
        kernel_rows=cure_kernels.QUICK_ROWS if quick else cure_kernels.FULL_ROWS,
    )


def measure_bandwidth(device: str, plan: Plan, threads: int) -> tuple[float, dict[str, Steady]]:
    copy, moved = copy_call(device, plan.working_set_bytes)
    warmed_seconds(copy, device)
    got = sample_until_steady({"bandwidth": copy}, cap_seconds=plan.bandwidth_cap, device=device, threads=threads)
    return moved / got["bandwidth"].best_seconds / 1e9, got


def measure_gemms(
    device: str, plan: Plan, threads: int, report: Callable[[str], None]
) -> tuple[dict[str, float], dict[str, Steady]]:
    """Peak GFLOP/s per dtype (square GEMMs, timed in turns) and each one's calls, as 'fp32 GEMM'..."""
    gemms: dict[str, tuple[Callable[[], Any], int]] = {}
    for name, dtype in DTYPES.items():
        report(name)
        sized = sized_gemm(dtype, device, plan.gemm_target)
        if sized is not None:
            gemms[name] = sized
    got = sample_until_steady(
        {f"{name} GEMM": call for name, (call, _) in gemms.items()},
        cap_seconds=plan.gemm_cap,
        device=device,
        threads=threads,
    )
    peaks = {name: 2 * side**3 / got[f"{name} GEMM"].best_seconds / 1e9 for name, (_, side) in gemms.items()}
    return peaks, got


def measure_cure_kernels(
    device: str, plan: Plan, threads: int
) -> tuple[dict[str, float], dict[str, int], dict[str, str], dict[str, Steady]]:
    """GFLOP/s of each cure kernel, the rows it ran at, why any could not run, and its calls."""
    kernels, unavailable = cure_kernels.prepare(
        device, threads, lambda call: warmed_seconds(call, device), plan.kernel_rows
    )
    got = sample_until_steady(
        {name: call for name, (call, _) in kernels.items()}, cap_seconds=plan.kernel_cap, device=device, threads=threads
    )
    rows = {name: count for name, (_, count) in kernels.items()}
    rates = {name: cure_kernels.flops(rows[name]) / got[name].best_seconds / 1e9 for name in kernels}
    return rates, rows, unavailable, got
