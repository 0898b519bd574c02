"""Timing calls until they are steady, and how much of that time the CPU was this process's.

Calibration keeps its figures for good, so each one must be trusted: every call is repeated until
its best BEST_OF calls agree within SPREAD_LIMIT, or a time cap is hit, and the spread it ended
with is kept. Calls agreeing is not enough: a steady load from other processes slows every call
alike. So the scheduler's own accounting is read too (Linux: /proc/self/task/*/schedstat, the time
each thread ran and the time it waited on a runqueue for a core): the share of its runnable time a
measurement actually ran. Alone on the machine that share is ~1; beside a busy process, lower.
Elsewhere the share is CPU time over wall time x threads (lower also where a call is serial).
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from accel.core.measure import Clock, now

# A measurement is steady when its best BEST_OF calls are within SPREAD_LIMIT of each other
# ((max - min) / median): the best calls are the ones other processes disturbed least, and 10% is
# well below the 1.2x-1.5x speed-ups the calibrated rates decide on.
BEST_OF = 3
SPREAD_LIMIT = 0.10

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Steady:
    """The calls of one measurement: seconds per call, and the CPU share while they ran."""

    samples: tuple[float, ...]
    cpu_share: float | None  # share of its runnable time the process ran; None where not measured

    @property
    def best_seconds(self) -> float:
        return min(self.samples)

    @property
    def spread(self) -> float:
        return spread(self.samples)


def spread(samples: tuple[float, ...] | list[float]) -> float:
    """(max - min) / median of the best BEST_OF samples; infinite with fewer samples than that."""
    if len(samples) < BEST_OF:
        return math.inf
    best = sorted(samples)[:BEST_OF]
    return (best[-1] - best[0]) / statistics.median(best)


def scheduler_seconds() -> tuple[float, float] | None:
    """(seconds run, seconds waited for a core) summed over this process's threads; None where
    the kernel does not expose schedstat."""
    ran = waited = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    for task in tasks:
        try:
            fields = Path(f"/proc/self/task/{task}/schedstat").read_text().split()
        except OSError:
            continue  # a thread that ended between listing and reading
        ran, waited = ran + int(fields[0]), waited + int(fields[1])
    return (ran / 1e9, waited / 1e9) if ran else None


class CpuMeter:
    """Accumulates, over the calls it watches, how much of its runnable time the process ran."""

    def __init__(self, threads: int) -> None:
        self.threads = max(threads, 1)
        self.ran = self.runnable = 0.0

    def watch(self, fn: Callable[[], T]) -> T:
        before, cpu, wall = scheduler_seconds(), time.process_time(), now()
        result = fn()
        after = scheduler_seconds()
        if before is not None and after is not None:
            ran, waited = max(after[0] - before[0], 0.0), max(after[1] - before[1], 0.0)
            self.ran, self.runnable = self.ran + ran, self.runnable + ran + waited
        else:
            self.ran += time.process_time() - cpu
            self.runnable += (now() - wall) * self.threads
        return result

    @property
    def share(self) -> float | None:
        return min(self.ran / self.runnable, 1.0) if self.runnable > 0 else None


def seconds_of(fn: Callable[[], Any], device: str = "cpu", clock: Clock = now) -> float:
    """Wall seconds of one call of `fn`; CUDA events on a GPU."""
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    began = clock()
    fn()
    return clock() - began


def warmed_seconds(fn: Callable[[], Any], device: str = "cpu") -> float:
    """Seconds of one call after one warm-up call."""
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
    return seconds_of(fn, device)


def sample_until_steady(
    calls: dict[str, Callable[[], Any]],
    *,
    cap_seconds: float,
    device: str = "cpu",
    threads: int = 1,
    clock: Clock = now,
) -> dict[str, Steady]:
    """Time the calls in turns (so a burst of load cannot favour one over another), each until its
    best BEST_OF calls agree within SPREAD_LIMIT; all stop once `cap_seconds` have passed and each
    has BEST_OF calls. Each call must have been run (warmed up) before."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    meters = {name: CpuMeter(threads) for name in calls}
    began = clock()
    waiting = list(calls)
    while waiting:
        for name in waiting:
            call = calls[name]
            samples[name].append(meters[name].watch(lambda: seconds_of(call, device, clock)))
        waiting = [name for name in waiting if spread(samples[name]) > SPREAD_LIMIT]
        if clock() - began >= cap_seconds and all(len(samples[name]) >= BEST_OF for name in waiting):
            break
    return {name: Steady(tuple(samples[name]), meters[name].share) for name in calls}
