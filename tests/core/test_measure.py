"""The measurement harness: thread count, settling, one-time costs, peak memory, interleaving."""

from __future__ import annotations

import itertools
import time

import torch

from accel.core.measure import (
    OneTimeCost,
    compare_interleaved,
    first_call_seconds,
    peak_memory_pair,
    settled,
    thread_count,
)


def test_thread_count_sets_and_restores():
    before = torch.get_num_threads()
    with thread_count(1) as used:
        assert used == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with thread_count(None) as used:
        assert used == before


def test_settled_sleeps_before_the_call():
    calls = []
    fn = settled(lambda: calls.append(time.perf_counter()), 0.05)
    start = time.perf_counter()
    fn()
    assert calls[0] - start >= 0.045
    assert settled(len, 0) is len


def test_one_time_cost_is_kept_apart():
    cost = OneTimeCost(setup_seconds=2.0, first_call_seconds=0.5)
    assert cost.total_seconds == 2.5 and cost.to_dict()["setup_seconds"] == 2.0
    ticks = itertools.count()
    assert first_call_seconds(lambda: None, clock=lambda: float(next(ticks))) == 1.0


def test_peak_rss_sees_memory_outside_torch():
    # In a fresh process: in this long-lived one, freed heap pages stay resident and get reused,
    # so a new allocation need not grow the resident set at all.
    import subprocess
    import sys

    code = (
        "import numpy as np; from accel.core.measure import peak_rss_bytes; "
        "print(peak_rss_bytes(lambda: np.ones(64 * 1024 * 1024 // 8).sum()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    peak = int(out.stdout.strip().splitlines()[-1])
    assert peak > 32 * 1024 * 1024


def test_peak_memory_pair_orders_a_big_and_a_small_side():
    big, small = peak_memory_pair(lambda: torch.ones(8 * 1024 * 1024).sum(), lambda: torch.ones(1024).sum())
    assert big > 8 * small


def test_compare_interleaved_alternates_and_settles():
    order = []
    comparison = compare_interleaved(
        lambda: order.append("a"),
        lambda: order.append("b"),
        warmup=1,
        settle_calls=0,
        settle_seconds=0.001,
        min_rounds=4,
        max_rounds=4,
    )
    assert order[2:] == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert comparison.baseline.count == comparison.candidate.count == 4


def test_compare_interleaved_settles_only_short_calls():
    """A settle call guards a short call from the other side's spinning pool; before a call of half
    a second or more it would only double the round's cost (a fake clock makes one side slow)."""
    ticks = [0.0]
    calls = {"fast": 0, "slow": 0}

    def side(name, seconds):
        def call():
            calls[name] += 1
            ticks[0] += seconds

        return call

    compare_interleaved(
        side("fast", 0.001),
        side("slow", 0.8),
        warmup=1,
        settle_calls=1,
        min_rounds=3,
        max_rounds=3,
        clock=lambda: ticks[0],
    )
    assert calls["fast"] == 1 + 3 * 2  # warm-up, then a settle and a timed call each round
    assert calls["slow"] == 1 + 3  # warm-up, then the timed calls only


def test_compare_interleaved_sees_a_planted_5x_gap():
    work = torch.randn(200, 200)

    def slow():
        for _ in range(10):
            work @ work

    def fast():
        for _ in range(2):
            work @ work

    # One intra-op thread: at 2 threads on a loaded 2-core machine an OpenMP stall makes single
    # calls 100x slower (0.13 s against 1.3 ms) and the interval spans 1.0 (seen at load 4).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        comparison = compare_interleaved(slow, fast, budget_seconds=2.0)
    finally:
        torch.set_num_threads(threads)
    assert comparison.faster_beyond(2.0)
    assert comparison.speedup_ci[0] <= comparison.speedup <= comparison.speedup_ci[1]


def test_compare_interleaved_stops_once_the_interval_decides():
    """Given `decided`, the rounds stop at the first round from min_rounds on whose interval it
    accepts (a 4x gap clear of a 1.03x keep threshold), not at the end of the budget."""
    ticks = [0.0]
    rounds = {"n": 0}

    def side(seconds):
        def call():
            rounds["n"] += 1
            ticks[0] += seconds * (1.0 + 0.05 * (rounds["n"] % 3))  # noise: never 2% wide

        return call

    def compare(decided):
        rounds["n"] = 0
        return compare_interleaved(
            side(1.0),
            side(0.25),
            warmup=1,
            settle_calls=0,
            min_rounds=7,
            budget_seconds=1e9,
            clock=lambda: ticks[0],
            decided=decided,
        )

    assert compare(None).candidate.count > 20  # without it: rounds until the interval is 2% wide
    stopped = compare(lambda ci: ci[0] > 1.03 or ci[1] < 1.03)
    assert stopped.candidate.count == 7 and stopped.speedup_ci[0] > 1.03
