"""The engine's last check: the final composition re-measured against the baseline.

The composition is held to the same keep test as each candidate (accel.optimizing.decision):
its whole interval, with every one-time cost spread over the declared passes, above the keep
threshold (for the memory target, its peak low enough). If it fails, the search's previous best
is re-measured once; if that fails too, the baseline is kept and the lock is empty.

The re-measure is budgeted: it is cut at the end of the seconds it was given, and says so (a
composition it cannot confirm is not kept: never kept by noise). When nothing was kept nothing is
re-measured (the baseline against itself would spend the budget to learn 1.0x).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from accel.core.measure import Comparison, Measurement, now
from accel.core.pipeline import Pipeline
from accel.optimizing.decision import Decision, KeepTest, decide
from accel.optimizing.fresh import FreshTimer
from accel.optimizing.optimizers import process_wide_among
from accel.optimizing.search.composer import Choice, Chosen, Composer, names
from accel.optimizing.search.measuring import Measurer, amortized, compare_pipelines, min_rounds
from accel.optimizing.search.memory import MemoryMeter

# No comparison gets less than this, however small the remaining budget: fewer rounds than this
# cannot separate a 3% effect from noise.
MIN_COMPARE_SECONDS = 0.5

Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Timing:
    """How the engine times and weighs one pipeline against another."""

    measurer: Measurer
    fresh: FreshTimer
    meter: MemoryMeter
    test: KeepTest

    def compare(
        self,
        best: tuple[Pipeline, tuple[Choice, ...]],
        trial: tuple[Pipeline, tuple[Choice, ...]],
        seconds: float,
        deadline: float | None = None,
        threshold: float | None = None,
    ) -> tuple[Comparison, dict[str, Any]]:
        """Interleaved in this process (cut at `deadline`, stopped once the interval is clear of
        `threshold`: see compare_pipelines); in fresh processes rebuilt from the lock entries where
        the two sides differ in a process-wide setting, which one process cannot hold for one side only."""
        if process_wide_among(c.optimizer for c in best[1]) == process_wide_among(c.optimizer for c in trial[1]):
            return compare_pipelines(self.measurer, best[0], trial[0], seconds, deadline, threshold), {}
        timed = self.fresh.compare(best[1], trial[1], seconds)
        return timed.comparison, timed.notes()

    def peaks(
        self, best: tuple[Pipeline, tuple[Choice, ...]], trial: tuple[Pipeline, tuple[Choice, ...]]
    ) -> tuple[int, int]:
        call = self.measurer.call
        return self.meter.pair((call(best[0]), best[1]), (call(trial[0]), trial[1]))


@dataclasses.dataclass(frozen=True)
class Final:
    """One composition re-measured against the baseline."""

    pipeline: Pipeline
    choices: tuple[Choice, ...]
    comparison: Comparison
    peaks: tuple[int | None, int | None]
    decision: Decision
    timed_in: str  # "this process", or "fresh processes, N a side" where a process-wide setting differs
    shortened: str = ""  # said when little budget was left: how few rounds it was re-measured in

    @property
    def memory_ratio(self) -> float | None:
        return self.decision.memory_ratio

    @property
    def slower(self) -> bool:
        return not self.decision.kept

    @property
    def measured(self) -> str:
        decision = self.decision
        if decision.test.target == "memory" and decision.memory_ratio is not None:
            return f"peak memory x{decision.memory_ratio:.2f}"
        low, high = decision.speedup_ci or (0.0, 0.0)
        return (
            f"{decision.speedup:.2f}x (interval {low:.2f}-{high:.2f}x over {decision.test.passes} passes, "
            f"needs above {decision.test.min_speedup}x)"
        )


def final_check(timing: Timing, composer: Composer, chosen: Chosen, seconds: float) -> Final:
    """`chosen` composed and re-measured against the baseline for about `seconds`: cut short
    (and saying so) when that leaves fewer rounds than a comparison takes."""
    baseline = composer.baseline
    pipeline, choices, _ = composer.build(chosen)
    deadline = now() + max(seconds, 0.0)
    memory_ratio: float | None = None
    peaks: tuple[int | None, int | None] = (None, None)
    if timing.test.target == "memory" or chosen:
        # Read first, within `seconds`: read after the comparison had taken them all, the peaks of a
        # slow model (GPT-2's eager generate() under the profiler) ran the search 16 s past its budget.
        peaks = timing.peaks((baseline, ()), (pipeline, choices))
        memory_ratio = peaks[1] / peaks[0] if peaks[0] else None
    left = max(deadline - now(), 0.0)
    comparison, notes = timing.compare(
        (baseline, ()), (pipeline, choices), max(MIN_COMPARE_SECONDS, left), deadline=deadline
    )
    rounds = len(comparison.candidate.samples)
    shortened = (
        f"re-measured in {rounds} rounds only: {left:.0f} s of budget left"
        if not notes and rounds < min_rounds(timing.test.target)
        else ""
    )
    counted = amortized(comparison, sum(c.recurring_seconds for c in choices), timing.test.passes)
    decision = decide(timing.test, counted.speedup, counted.speedup_ci, memory_ratio=memory_ratio)
    return Final(pipeline, choices, comparison, peaks, decision, notes.get("timed_in", "this process"), shortened)


def measured_win(pipeline: Pipeline, choices: tuple[Choice, ...], comparison: Comparison, decision: Decision) -> Final:
    """The search's only win as its own trial measured it against the baseline: the result where
    the budget leaves no time to re-measure it (for one win, a re-measure only confirms)."""
    said = "not re-measured: no budget was left, and its trial measured it against the baseline"
    return Final(pipeline, choices, comparison, (None, None), decision, "this process", said)


def unmeasured(timing: Timing, baseline: Pipeline, measured: Measurement) -> Final:
    """The baseline as the result when nothing was kept: nothing to re-measure it against (timing
    it against itself would spend the budget to learn 1.0x), its time as measured before the search."""
    comparison = Comparison(measured, measured, speedup=1.0, speedup_ci=(1.0, 1.0))
    return Final(baseline, (), comparison, (None, None), decide(timing.test, 1.0, (1.0, 1.0)), "this process")


def settle(
    timing: Timing,
    composer: Composer,
    bests: list[Chosen],
    remaining: Callable[[], float],
    final_seconds: float,
    progress: Progress,
    baseline_time: Measurement,
    first_win: Final | None = None,
) -> tuple[Final, str]:
    """The final composition (`bests[-1]`; the search's earlier bests before it) re-measured for at
    most `final_seconds`, the previous best when it does not hold up (on what budget remains), else
    the baseline; and the message saying which. Nothing kept: nothing re-measured, the baseline at
    `baseline_time`. One win (`first_win`, measured against the baseline) and less than
    `final_seconds` left: that win as its trial measured it (the engine keeps no reserve for a
    re-measure until a first win, so a slow model's first trial may take the whole budget)."""
    if not bests[-1]:
        return unmeasured(timing, composer.baseline, baseline_time), "no candidate helped: the lock is empty"
    if first_win is not None and len(bests) == 2 and remaining() < final_seconds:
        return first_win, f"kept {names(first_win.choices)} ({first_win.shortened})"
    progress("re-measuring the final pipeline against the baseline")
    # A trial's setup (an export) cannot be cut: when one ran over, the re-measure still gets a
    # third of its share, or a kept win would be reverted for want of rounds (5% over at most).
    final = final_check(timing, composer, bests[-1], max(min(remaining(), final_seconds), final_seconds / 3))
    said = f" ({final.shortened})" if final.shortened else ""
    if not final.choices:
        return as_baseline(final, composer.baseline), "no candidate helped: the lock is empty"
    if not final.slower:
        return final, f"kept {names(final.choices)}{said}"
    # The composition is reverted whole. Two wins can lose together, and a re-measure can land on
    # the wrong side of the threshold: the search's previous best (the composition before its last
    # acceptance, itself measured a win) is re-measured once, on what budget is left.
    message = f"the combination of {names(final.choices)} measured {final.measured} against the baseline{said}"
    previous = bests[-2] if len(bests) > 1 else {}
    if previous:
        progress("re-measuring the search's previous best against the baseline")
        fallback = final_check(timing, composer, previous, remaining())
        if not fallback.slower:
            return (
                fallback,
                f"{message}; kept {names(fallback.choices)} (the search's previous best: {fallback.measured})",
            )
        message += f"; {names(fallback.choices)} (the previous best) measured {fallback.measured}"
    return as_baseline(final, composer.baseline), message + ": keeping the baseline, the lock is empty"


def as_baseline(final: Final, baseline: Pipeline) -> Final:
    """The baseline in the place of a composition that was reverted (or of no choice at all: then
    what was measured stays, at a speedup of 1)."""
    comparison = dataclasses.replace(final.comparison, speedup=1.0, speedup_ci=(1.0, 1.0))
    if not final.choices:
        return dataclasses.replace(final, pipeline=baseline, comparison=comparison)
    memory_ratio = 1.0 if final.memory_ratio is not None else None
    return dataclasses.replace(
        final,
        pipeline=baseline,
        choices=(),
        comparison=dataclasses.replace(comparison, candidate=comparison.baseline),
        decision=dataclasses.replace(final.decision, memory_ratio=memory_ratio),
        peaks=(final.peaks[0], final.peaks[0]),
    )
