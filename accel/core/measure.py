"""Measuring: timing with warm-up and repeats, interleaved A/B comparison, peak memory,
thread-count control, settling of spinning runtimes and one-time costs.

A `Measurement` keeps the raw samples (seconds per call); medians, percentiles and confidence
intervals are computed from them. Timing functions take a `clock` so tests can pass a fake one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from accel.core.stats import bootstrap_ci, paired_ratio_ci

Clock = Callable[[], float]


def now() -> float:
    """The one clock accel times with (monotonic, high resolution); timing code takes a `clock`
    defaulting to it, so tests can pass a fake one."""
    return time.perf_counter()


# The confidence interval of the median is "tight enough" once its half-width is within this
# fraction of the median: below the 3% effects that optimize keeps and the gate is asked to see.
TARGET_RELATIVE_HALF_WIDTH = 0.02


@dataclasses.dataclass(frozen=True)
class Measurement:
    """Raw per-call samples in seconds, plus what was done before them."""

    samples: tuple[float, ...]
    warmup_calls: int = 0
    first_call_seconds: float | None = None

    def __post_init__(self) -> None:
        if any(s < 0 for s in self.samples):
            raise ValueError("a Measurement's samples must be >= 0 seconds")

    @property
    def count(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return float(np.median(self.samples)) if self.samples else math.nan

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples)) if self.samples else math.nan

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.samples, q)) if self.samples else math.nan

    @property
    def p90(self) -> float:
        return self.percentile(90)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    @property
    def iqr(self) -> float:
        return self.percentile(75) - self.percentile(25)

    def median_ci(self, confidence: float = 0.95) -> tuple[float, float]:
        return bootstrap_ci(self.samples, confidence=confidence)

    @property
    def relative_half_width(self) -> float:
        low, high = self.median_ci()
        median = self.median
        return (high - low) / 2.0 / median if median > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {
            "median_seconds": self.median,
            "p90_seconds": self.p90,
            "p99_seconds": self.p99,
            "iqr_seconds": self.iqr,
            "count": self.count,
            "samples_seconds": list(self.samples),
            "first_call_seconds": self.first_call_seconds,
        }


def device_sync(device: torch.device | str | None) -> Callable[[], None]:
    """A function that waits for queued device work: CUDA kernels run asynchronously."""
    if device is not None and torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return _no_sync


def _no_sync() -> None:
    return None


def time_calls(
    fn: Callable[[], Any],
    *,
    warmup: int = 3,
    min_repeats: int = 5,
    max_repeats: int = 200,
    budget_seconds: float = 5.0,
    target_relative_half_width: float = TARGET_RELATIVE_HALF_WIDTH,
    clock: Clock = now,
    sync: Callable[[], None] = _no_sync,
) -> Measurement:
    """Time `fn` after warm-up, repeating until the median's CI is tight or the budget ends."""
    start = clock()
    fn()
    sync()
    first = clock() - start
    for _ in range(max(warmup - 1, 0)):
        fn()
        sync()
    samples: list[float] = []
    began = clock()
    while len(samples) < max_repeats:
        t0 = clock()
        fn()
        sync()
        samples.append(clock() - t0)
        if len(samples) >= min_repeats:
            if clock() - began >= budget_seconds:
                break
            if len(samples) % 5 == 0 and Measurement(tuple(samples)).relative_half_width <= target_relative_half_width:
                break
    return Measurement(tuple(samples), warmup_calls=warmup, first_call_seconds=first)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Two measurements taken interleaved; speedup = baseline median / candidate median."""

    baseline: Measurement
    candidate: Measurement
    speedup: float
    speedup_ci: tuple[float, float]

    def faster_beyond(self, factor: float) -> bool:
        """True when the whole confidence interval of the speedup lies above `factor`."""
        return self.speedup_ci[0] > factor

    def to_dict(self) -> dict[str, Any]:
        return {
            "speedup": self.speedup,
            "speedup_ci": list(self.speedup_ci),
            "baseline": self.baseline.to_dict(),
            "candidate": self.candidate.to_dict(),
        }


# The fewest rounds a deadline leaves a comparison: a bootstrap interval over two pairs says nothing.
MIN_ROUNDS_BY_DEADLINE = 3
# A side whose last timed call took this long gets no settle calls: a runtime's spinning pool idles
# out within milliseconds, under 1% of such a call, while a settle call doubles what every round of
# a slow model costs (a BERT-base call at 9-13 s on a busy 2-core machine).
SETTLE_BELOW_SECONDS = 0.5


def compare_interleaved(
    baseline: Callable[[], Any],
    candidate: Callable[[], Any],
    *,
    warmup: int = 3,
    settle_calls: int = 1,
    settle_seconds: float = 0.0,
    min_rounds: int = 7,
    max_rounds: int = 60,
    budget_seconds: float = 10.0,
    target_relative_half_width: float = TARGET_RELATIVE_HALF_WIDTH,
    clock: Clock = now,
    sync: Callable[[], None] = _no_sync,
    deadline: float | None = None,
    decided: Callable[[tuple[float, float]], bool] | None = None,
) -> Comparison:
    """Time two callables in alternating rounds (A B, B A, ...) so drift hits both alike.
    Past `deadline` (a `clock()` time) the rounds stop at the next round's end, min_rounds or not
    (MIN_ROUNDS_BY_DEADLINE at least). From min_rounds on, the rounds also stop once the interval
    is narrow enough (`target_relative_half_width`) or, given `decided`, once it says the interval
    settles the question asked (a keep threshold it lies wholly above or below).

    Before each timed call the callable runs `settle_calls` untimed calls: runtimes keep worker
    threads spinning after a call, which distorts whatever is timed right after another runtime.
    `settle_seconds` of sleep before those calls lets the other side's spinning pool go idle first.
    A side whose last timed call took SETTLE_BELOW_SECONDS or more is not settled (see there).
    """
    firsts, warm = [], []  # each side's first call, and its last warm-up call (what settling reads)
    for fn in (baseline, candidate):
        t0 = clock()
        fn()
        sync()
        firsts.append(clock() - t0)
        warm.append(firsts[-1])
        for _ in range(max(warmup - 1, 0)):
            t0 = clock()
            fn()
            sync()
            warm[-1] = clock() - t0
    times: dict[int, list[float]] = {0: [], 1: []}
    fns = (baseline, candidate)
    began = clock()
    for round_index in range(max_rounds):
        order = (0, 1) if round_index % 2 == 0 else (1, 0)
        for side in order:
            last = times[side][-1] if times[side] else warm[side]
            settles = settle_calls if last < SETTLE_BELOW_SECONDS else 0
            if settle_seconds > 0 and settles:
                time.sleep(settle_seconds)
            for _ in range(settles):
                fns[side]()
            sync()
            t0 = clock()
            fns[side]()
            sync()
            times[side].append(clock() - t0)
        if deadline is not None and round_index + 1 >= MIN_ROUNDS_BY_DEADLINE and clock() >= deadline:
            break
        if round_index + 1 >= min_rounds:
            if clock() - began >= budget_seconds:
                break
            ratio, (low, high) = paired_ratio_ci(times[0], times[1])
            if (high - low) / 2.0 / ratio <= target_relative_half_width:
                break
            if decided is not None and decided((low, high)):
                break
    ratio, ci = paired_ratio_ci(times[0], times[1])
    return Comparison(
        baseline=Measurement(tuple(times[0]), warmup_calls=warmup, first_call_seconds=firsts[0]),
        candidate=Measurement(tuple(times[1]), warmup_calls=warmup, first_call_seconds=firsts[1]),
        speedup=ratio,
        speedup_ci=ci,
    )


def peak_memory_bytes(fn: Callable[[], Any], device: torch.device | str | None = None) -> int:
    """Peak bytes of tensor memory allocated while `fn` runs, above what was live before it.

    On CUDA: the caching allocator's peak statistic. On CPU: the allocation and free events that
    torch.profiler records from the CPU allocator, summed in time order.
    """
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return max(int(torch.cuda.max_memory_allocated() - before), 0)
    from torch.profiler import ProfilerActivity, profile

    from accel.core.profiler_notes import quiet_profiler

    with quiet_profiler(profile(activities=[ProfilerActivity.CPU], profile_memory=True)) as prof:
        fn()
    # An allocation is charged to the innermost op that made it (its self memory); frees outside
    # any op appear as "[memory]" events. Walked in time order, they give the live bytes over time.
    changes = []
    for event in prof.events():
        delta = event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
        if delta:
            changes.append((event.time_range.start, delta))
    changes.sort(key=lambda change: change[0])
    live = peak = 0
    for _, delta in changes:
        live += delta
        peak = max(peak, live)
    return int(peak)


@contextlib.contextmanager
def thread_count(threads: int | None) -> Iterator[int]:
    """Run a block with torch's intra-op thread count set (None: leave it), restored after.

    Both sides of a comparison run under one thread count, so a candidate cannot win by
    taking more cores than the baseline had.
    """
    before = torch.get_num_threads()
    if threads is not None and threads > 0 and threads != before:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def settled(fn: Callable[[], Any], settle_seconds: float) -> Callable[[], Any]:
    """`fn` preceded by an untimed pause: spinning runtime pools (ONNX Runtime's intra-op pool,
    OpenMP) go idle, so they do not steal the cores of whatever runs next."""
    if settle_seconds <= 0:
        return fn

    def call() -> Any:
        time.sleep(settle_seconds)
        return fn()

    return call


@dataclasses.dataclass(frozen=True)
class OneTimeCost:
    """What a candidate paid once, apart from its steady state: setup (export, compilation,
    calibration) and its first call (lazy compilation, allocator warm-up)."""

    setup_seconds: float = 0.0
    first_call_seconds: float = 0.0

    @property
    def total_seconds(self) -> float:
        return self.setup_seconds + self.first_call_seconds

    def to_dict(self) -> dict[str, float]:
        return {
            "setup_seconds": self.setup_seconds,
            "first_call_seconds": self.first_call_seconds,
            "total_seconds": self.total_seconds,
        }


def first_call_seconds(fn: Callable[[], Any], clock: Clock = now, sync: Callable[[], None] = _no_sync) -> float:
    """Seconds of one call, meant for the very first call of a new candidate."""
    t0 = clock()
    fn()
    sync()
    return clock() - t0


def peak_rss_bytes(fn: Callable[[], Any]) -> int | None:
    """Peak resident memory of the process while `fn` runs, above what was resident before.

    Sees what the torch profiler cannot: memory that other runtimes (ONNX Runtime's arenas)
    allocate. Linux only (it resets the high-water mark through /proc/self/clear_refs); None
    where that is not possible.
    """
    status = Path("/proc/self/status")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_bytes(status, "VmRSS")
        fn()
        peak = _status_bytes(status, "VmHWM")
    except OSError:
        return None
    if before is None or peak is None:
        return None
    return max(peak - before, 0)


def _status_bytes(status: Path, key: str) -> int | None:
    for line in status.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return None


# Seconds a fresh process may take to set one side up and measure it (torch import, load, export).
FRESH_PROCESS_TIMEOUT_SECONDS = 300.0
FRESH_PROCESS_MARK = "accel-peak-rss-bytes:"


def peak_rss_in_fresh_process(
    module: str, args: list[str], timeout_seconds: float = FRESH_PROCESS_TIMEOUT_SECONDS
) -> int | None:
    """Run `python -m module *args` in a fresh interpreter; it prints FRESH_PROCESS_MARK and the
    peak resident bytes it measured (see peak_rss_bytes). Each side of a comparison measured this
    way starts from nothing, so memory a runtime allocates on its first call (ONNX Runtime's arena)
    counts on both. None when the child fails or cannot measure."""
    import subprocess
    import sys

    try:
        done = subprocess.run(
            [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout_seconds
        )
    except subprocess.TimeoutExpired:  # run() kills the child before raising
        return None
    for line in done.stdout.splitlines():
        if line.startswith(FRESH_PROCESS_MARK) and done.returncode == 0:
            value = line[len(FRESH_PROCESS_MARK) :].strip()
            return int(value) if value.isdigit() else None
    return None


def peak_memory_pair(
    baseline: Callable[[], Any], candidate: Callable[[], Any], device: torch.device | str | None = None
) -> tuple[int, int]:
    """Peak memory of both sides in this process, each after one untimed call (so lazy setup is
    not counted): the larger of tensor memory and, on CPU, resident memory growth. Memory a runtime
    keeps from its first call (ONNX Runtime's arena) is invisible here: where both sides can be
    rebuilt in a fresh process, measure them with peak_rss_in_fresh_process instead."""
    peaks = []
    for fn in (baseline, candidate):
        fn()
        tensor_peak = peak_memory_bytes(fn, device)
        rss = None if device is not None and torch.device(device).type == "cuda" else peak_rss_bytes(fn)
        peaks.append(max(tensor_peak, rss or 0))
    return peaks[0], peaks[1]
