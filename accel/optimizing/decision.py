"""The one keep-or-revert decision: every search (the recipe engine, a script's DataLoader search)
and `accel verify` ask `decide` whether a measured candidate is kept, and show its reason.

A decision is data: whether it is kept, why (a Cause), and the numbers it was made from. The
sentence shown to the user is rendered from those numbers (`Decision.reason`), never parsed back.
What happened to a candidate in a search is a Verdict, one list for the engine, the script search
and the CLI; its values are the strings the `accel.optimize/1` JSON has always carried.
"""

from __future__ import annotations

import dataclasses
import enum

from accel.optimizing.recipes.schema import (
    DEFAULT_MAX_SLOWDOWN,
    DEFAULT_MIN_MEMORY_SAVING,
    DEFAULT_MIN_SPEEDUP,
    Recipe,
)

MEMORY = "memory"


class Verdict(str, enum.Enum):
    """What a search did with one candidate."""

    ACCEPTED = "accepted"
    REVERTED = "reverted"
    NOT_APPLICABLE = "not applicable"
    FAILED = "failed"
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value


class Cause(str, enum.Enum):
    """Why a measured candidate is kept or reverted."""

    FASTER = "faster"  # kept: the speedup's whole interval lies above min_speedup
    SAVES_MEMORY = "saves memory"  # kept: the peak shrank enough, at an allowed slowdown
    GUARD = "guard"  # its outputs (or a script's batches) are not the baseline's
    SLOWER = "slower"  # the whole interval lies below 1
    WITHIN_NOISE = "within noise"  # the interval reaches down to min_speedup or below
    TOO_LITTLE_SAVED = "too little memory saved"
    TOO_SLOW = "too slow for its memory saving"


@dataclasses.dataclass(frozen=True)
class KeepTest:
    """The thresholds a candidate is held to: the recipe's keep section (or what a lock recorded of
    it) and the target it is measured for."""

    target: str = "latency"
    min_speedup: float = DEFAULT_MIN_SPEEDUP
    min_memory_saving: float = DEFAULT_MIN_MEMORY_SAVING
    max_slowdown: float = DEFAULT_MAX_SLOWDOWN
    passes: int = 1  # one-time costs are spread over this many passes

    @classmethod
    def of(cls, recipe: Recipe, target: str | None = None) -> KeepTest:
        """The recipe's keep test; `target`: the one actually measured (throughput falls back to
        latency on a pipeline without a source)."""
        keep = recipe.keep
        return cls(target or recipe.target, keep.min_speedup, keep.min_memory_saving, keep.max_slowdown, recipe.passes)

    @property
    def max_memory_ratio(self) -> float:
        return 1 - self.min_memory_saving


@dataclasses.dataclass(frozen=True)
class Decision:
    """Kept or not, why, and the numbers it was decided on."""

    kept: bool
    cause: Cause
    test: KeepTest
    speedup: float | None = None
    speedup_ci: tuple[float, float] | None = None
    memory_ratio: float | None = None
    guard_failure: str | None = None
    spread_one_time: bool = False  # a one-time cost was spread over test.passes

    @property
    def verdict(self) -> Verdict:
        return Verdict.ACCEPTED if self.kept else Verdict.REVERTED

    @property
    def reason(self) -> str:
        """The sentence a search shows: 'kept: ...' or why not."""
        return f"kept: {self.describe()}" if self.kept else self.describe()

    def describe(self, against: str = "") -> str:
        """Why, without the verdict; `against`: what a slower candidate is slower than, when named."""
        test = self.test
        counted = f", its per-process cost spread over {test.passes} passes" if self.spread_one_time else ""
        low = self.speedup_ci[0] if self.speedup_ci else 0.0
        ratio = f"x{self.memory_ratio:.2f}" if self.memory_ratio is not None else "not measured"
        slowdown = 1 / self.speedup if self.speedup else float("inf")
        return {
            Cause.GUARD: self.guard_failure or "",
            Cause.FASTER: f"interval above {test.min_speedup}x{counted}",
            Cause.SAVES_MEMORY: f"peak memory {ratio}",
            Cause.SLOWER: f"slower{' than ' + against if against else ''}{counted}",
            Cause.WITHIN_NOISE: f"not faster beyond noise (interval reaches {low:.2f}x, needs > {test.min_speedup}x"
            f"{counted})",
            Cause.TOO_LITTLE_SAVED: f"saves too little memory ({ratio}, needs x{test.max_memory_ratio:.2f} or less)",
            Cause.TOO_SLOW: f"saves memory but {slowdown:.2f}x slower, beyond the {test.max_slowdown}x allowed",
        }[self.cause]


def decide(
    test: KeepTest,
    speedup: float,
    speedup_ci: tuple[float, float],
    *,
    memory_ratio: float | None = None,
    guard_failure: str | None = None,
    spread_one_time: bool = False,
) -> Decision:
    """Keep a candidate when it passed the guard and, for the memory target, its peak shrank by
    min_memory_saving at most max_slowdown slower; for the others, when its speedup's whole
    interval (one-time costs already spread, see measuring.amortized) lies above min_speedup."""
    low, high = speedup_ci
    if guard_failure:
        cause = Cause.GUARD
    elif test.target == MEMORY:
        if memory_ratio is None or memory_ratio > test.max_memory_ratio:
            cause = Cause.TOO_LITTLE_SAVED
        elif high < 1 / test.max_slowdown:
            cause = Cause.TOO_SLOW
        else:
            cause = Cause.SAVES_MEMORY
    elif low > test.min_speedup:
        cause = Cause.FASTER
    elif high < 1.0:
        cause = Cause.SLOWER
    else:
        cause = Cause.WITHIN_NOISE
    return Decision(
        kept=cause in (Cause.FASTER, Cause.SAVES_MEMORY),
        cause=cause,
        test=test,
        speedup=speedup,
        speedup_ci=(low, high),
        memory_ratio=memory_ratio,
        guard_failure=guard_failure,
        spread_one_time=spread_one_time,
    )
