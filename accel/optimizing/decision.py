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
import os

from accel.optimizing.recipes.schema import (
    DEFAULT_MAX_SLOWDOWN,
    DEFAULT_MIN_MEMORY_SAVING,
    DEFAULT_MIN_SPEEDUP,
    Recipe,
)

MEMORY = "memory"
# A machine whose 1-minute load average is above this many times its cores runs other work on
# every core: the timings of both sides carry it, and a wide interval there is noise, not the model.
BUSY_LOAD_PER_CORE = 1.5


@dataclasses.dataclass(frozen=True)
class Load:
    """The machine's 1-minute load average and its cores, when a measurement was taken."""

    average: float
    cores: int

    @classmethod
    def now(cls) -> Load | None:
        try:
            return cls(os.getloadavg()[0], os.cpu_count() or 1)
        except OSError:  # no load average on this OS
            return None

    @property
    def busy(self) -> bool:
        return self.average > BUSY_LOAD_PER_CORE * self.cores

    def describe(self) -> str:
        return f"load average {self.average:.1f} on {self.cores} cores"


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
    TOO_NOISY = "too noisy to decide"  # the interval spans a loss and a win: it resolves nothing
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
    load: Load | None = None  # the machine's load when it was measured

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
            Cause.TOO_NOISY: self._too_noisy(),
            Cause.TOO_LITTLE_SAVED: f"saves too little memory ({ratio}, needs x{test.max_memory_ratio:.2f} or less)",
            Cause.TOO_SLOW: f"saves memory but {slowdown:.2f}x slower, beyond the {test.max_slowdown}x allowed",
        }[self.cause]

    def _too_noisy(self) -> str:
        low, high = self.speedup_ci or (0.0, 0.0)
        busy = f"; the machine was busy ({self.load.describe()})" if self.load is not None and self.load.busy else ""
        return f"too noisy to decide: the interval {low:.2f}-{high:.2f}x cannot resolve {self.test.min_speedup}x{busy}"


def too_noisy(test: KeepTest, low: float, high: float, load: Load | None) -> bool:
    """An interval too wide for the keep threshold to decide on: it spans both a loss and a win
    beyond min_speedup, or it is wider than min_speedup itself on a busy machine."""
    spans_both = low < 1 / test.min_speedup and high > test.min_speedup
    wide = low > 0 and high / low > test.min_speedup
    return spans_both or (wide and load is not None and load.busy)


def decide(
    test: KeepTest,
    speedup: float,
    speedup_ci: tuple[float, float],
    *,
    memory_ratio: float | None = None,
    guard_failure: str | None = None,
    spread_one_time: bool = False,
    load: Load | None = None,
) -> Decision:
    """Keep a candidate when it passed the guard and, for the memory target, its peak shrank by
    min_memory_saving at most max_slowdown slower; for the others, when its speedup's whole
    interval (one-time costs already spread, see measuring.amortized) lies above min_speedup.
    An interval that is neither above min_speedup nor below 1, and too wide to resolve min_speedup
    (see too_noisy; `load`: the machine's when measured), is "too noisy to decide": reverted,
    never kept by noise."""
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
    elif too_noisy(test, low, high, load):
        cause = Cause.TOO_NOISY
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
        load=load,
    )
