"""A profile's time budget: one Deadline shared by its measuring passes, each given a share
(PassBudget) and a minimum of one model call, and timing sized by what a pass has left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Callable, Iterator

from accel.core.measure import TARGET_RELATIVE_HALF_WIDTH, Clock, Measurement, device_sync, now

# The largest budget any command or recipe takes: a day. A budget past it is a typo (inf, 1e9,
# .nan in YAML) that would leave a hung stage unbounded.
MAX_BUDGET_SECONDS = 86_400.0


@dataclasses.dataclass
class PassBudget:
    """The seconds one measuring pass may spend (its share of a Deadline), and what it did with them:
    the model calls it made and whether it stopped before the calls it wanted."""

    name: str
    seconds: float
    clock: Clock = now
    began: float = dataclasses.field(default=0.0)
    calls: int = 0
    cut_short: bool = False
    spent_seconds: float | None = None
    call_seconds: float | None = None  # the model's per-call seconds, as an earlier pass measured them

    def __post_init__(self) -> None:
        self.began = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.began

    def left(self) -> float:
        return max(self.seconds - self.elapsed(), 0.0)

    def fit(self, call_seconds: float, wanted: int, minimum: int = 1) -> int:
        """How many calls of `call_seconds` to make: `wanted` where they fit in what is left, else as
        many as fit but never fewer than `minimum` (the pass is then cut short)."""
        fits = self.left() / call_seconds if call_seconds > 0 else math.inf
        if fits >= wanted:
            return wanted
        self.cut_short = True
        return max(int(fits), minimum)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "allowed_seconds": self.seconds,
            "spent_seconds": self.spent_seconds if self.spent_seconds is not None else self.elapsed(),
            "calls": self.calls,
            "cut_short": self.cut_short,
        }


class Deadline:
    """One time budget shared by the passes of a profile. Each pass, when it starts, is given its
    weight's share of the seconds left among the passes not yet started, so a pass that finishes
    early leaves its time to the later ones; a pass always makes its minimum (one measured call),
    so a model whose single call is longer than the budget overruns by that call. The first pass
    records the model's per-call seconds (`call_seconds`), which sizes the later passes."""

    def __init__(self, budget_seconds: float, weights: dict[str, float], clock: Clock = now) -> None:
        if budget_seconds <= 0:
            raise ValueError(f"budget_seconds must be > 0, got {budget_seconds}")
        self.budget_seconds = budget_seconds
        self.weights = dict(weights)
        self.clock = clock
        self.began = clock()
        self.passes: list[PassBudget] = []
        self.call_seconds: float | None = None

    def left(self) -> float:
        return max(self.budget_seconds - (self.clock() - self.began), 0.0)

    @contextlib.contextmanager
    def run(self, name: str) -> Iterator[PassBudget]:
        """A pass's budget while it runs; its spent seconds are recorded when it ends."""
        started = {p.name for p in self.passes}
        pending = sum(weight for other, weight in self.weights.items() if other not in started)
        share = self.weights.get(name, 0.0) / pending if pending > 0 else 1.0
        budget = PassBudget(name, self.left() * min(share, 1.0), clock=self.clock)
        self.passes.append(budget)
        try:
            yield budget
        finally:
            budget.spent_seconds = budget.elapsed()

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget_seconds": self.budget_seconds,
            "spent_seconds": self.clock() - self.began,
            "call_seconds": self.call_seconds,
            "passes": [p.to_dict() for p in self.passes],
            "cut_short": [p.name for p in self.passes if p.cut_short],
        }


def time_calls_within(
    fn: Callable[[], Any],
    budget: PassBudget,
    *,
    warmup: int = 3,
    min_repeats: int = 5,
    max_repeats: int = 200,
    target_relative_half_width: float = TARGET_RELATIVE_HALF_WIDTH,
    sync: Callable[[], None] = device_sync(None),
) -> Measurement:
    """time_calls sized by a pass's budget: the first (warm-up) call is timed and decides how many
    more warm-up calls and repeats fit; at least one timed call is made. Fewer than `min_repeats`
    marks the pass cut short. The calls are counted in `budget.calls`."""
    clock = budget.clock
    t0 = clock()
    fn()
    sync()
    first = clock() - t0
    fits = budget.left() / first if first > 0 else math.inf
    extra_warmup = warmup - 1 if fits >= warmup - 1 + min_repeats else 0
    for _ in range(max(extra_warmup, 0)):
        fn()
        sync()
    samples: list[float] = []
    while len(samples) < max_repeats:
        t0 = clock()
        fn()
        sync()
        samples.append(clock() - t0)
        if budget.left() < samples[-1]:
            break  # the next call would run past the pass's share
        if len(samples) >= min_repeats:
            if len(samples) % 5 == 0 and Measurement(tuple(samples)).relative_half_width <= target_relative_half_width:
                break
    budget.calls += 1 + max(extra_warmup, 0) + len(samples)
    if len(samples) < min_repeats:
        budget.cut_short = True
    return Measurement(tuple(samples), warmup_calls=1 + max(extra_warmup, 0), first_call_seconds=first)
