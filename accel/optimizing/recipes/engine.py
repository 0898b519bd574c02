"""The optimize engine: apply candidates, measure each against the current best, keep or revert.

    baseline -> (profile, when a rule needs findings) -> for each matching candidate:
        trial = the accepted optimizations with this candidate in its slot, composed from the baseline
        guard: the trial's outputs against the BASELINE's (errors never accumulate unseen)
        speed: trial against the current best, interleaved A/B/A/B, same thread count
        keep when the guard passes and the gain is beyond noise, else revert with the reason
    -> the final composition re-measured against the baseline; if it is not faster, the search's
       previous best re-measured once; if that is not faster either, the baseline.

Candidates in one slot are alternatives (every way of replacing the model is one slot), so a trial
replaces that slot's current choice; every trial contains the other accepted optimizations, so
each acceptance re-measures the combination (two wins alone can lose together).

The search is a `Search`: `plan()` the candidates, `try_candidate()` each, `finish()`. Which
candidates are tried is accel.optimizing.recipes.planning; how a set of choices is composed,
.composer; how a pipeline is timed, .measuring; the last re-measure, .final; the keep test every
candidate (and the final composition) is held to, accel.optimizing.decision.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar

import torch

from accel.core.errors import AccelError
from accel.core.measure import Comparison, device_sync, now
from accel.core.pipeline import Pipeline
from accel.optimizing.decision import KeepTest, Verdict, decide
from accel.optimizing.fresh import FreshTimer
from accel.optimizing.lock import PIPELINE_LOCK, LockEntry
from accel.optimizing.optimizers import OPTIMIZERS, Context, Optimizer, make_config, slot_of
from accel.optimizing.recipes.composer import Choice, Chosen, Composer
from accel.optimizing.recipes.final import MIN_COMPARE_SECONDS, Timing, settle
from accel.optimizing.recipes.measuring import Measurer, amortized, compare_pipelines
from accel.optimizing.recipes.memory import MemoryMeter
from accel.optimizing.recipes.planning import matching_findings, plan, rule_candidates, rule_matches
from accel.optimizing.recipes.schema import Candidate, Guard, Recipe, Rule
from accel.optimizing.recipes.validation import Validator, calibrated_batches
from accel.optimizing.steps import Step

__all__ = [
    "ACCEPTED",
    "FAILED",
    "FINAL_SHARE",
    "MIN_COMPARE_SECONDS",
    "NOT_APPLICABLE",
    "REVERTED",
    "SKIPPED",
    "Choice",
    "Composer",
    "EngineResult",
    "Measurer",
    "Search",
    "Step",
    "Verdict",
    "amortized",
    "compare_pipelines",
    "matching_findings",
    "rule_candidates",
    "rule_matches",
    "run_engine",
]

Progress = Callable[[str], None]

# Share of the budget kept for re-measuring the final composition against the baseline.
FINAL_SHARE = 0.15
ACCEPTED, REVERTED, NOT_APPLICABLE, FAILED, SKIPPED = (
    Verdict.ACCEPTED,
    Verdict.REVERTED,
    Verdict.NOT_APPLICABLE,
    Verdict.FAILED,
    Verdict.SKIPPED,
)


@dataclasses.dataclass(frozen=True)
class EngineResult:
    pipeline: Pipeline
    target: str
    choices: tuple[Choice, ...]
    steps: tuple[Step, ...]
    baseline: dict[str, Any]
    final: dict[str, Any]
    speedup: float
    speedup_ci: tuple[float, float]
    memory_ratio: float | None
    threads: int
    message: str
    elapsed_seconds: float
    recipe: str = ""
    keep: KeepTest = KeepTest()
    lock_kind: ClassVar[str] = PIPELINE_LOCK

    def lock_entries(self) -> tuple[LockEntry, ...]:
        return tuple(LockEntry(c.optimizer, c.params, c.state) for c in self.choices)


@dataclasses.dataclass(frozen=True)
class _Trial:
    """One candidate composed with the accepted ones, checked against the guard and timed."""

    pipeline: Pipeline
    choices: tuple[Choice, ...]
    setup_seconds: float
    fidelity: Any  # accel.optimizing.recipes.fidelity.Fidelity
    failure: str | None  # why the guard failed it
    comparison: Comparison  # against the current best
    fresh_notes: dict[str, Any]
    memory_ratio: float | None


class Search:
    """One search of a recipe's candidates for a baseline: `plan()`, `try_candidate()` each
    planned candidate, `finish()`. The steps so far are in `steps`, the accepted choices in
    `chosen`, the search's bests (each a win over the one before) in `bests`."""

    def __init__(
        self,
        baseline: Pipeline,
        recipe: Recipe,
        context: Context,
        *,
        budget_seconds: float | None = None,
        progress: Progress = lambda message: None,
        report: Any = None,
    ) -> None:
        self.started = now()
        self.budget = float(budget_seconds if budget_seconds is not None else recipe.budget_seconds)
        self.recipe, self.context, self.report, self.progress = recipe, context, report, progress
        measurer = Measurer(baseline, recipe.target, device_sync(context.machine.device))
        self.timing = Timing(
            measurer,
            FreshTimer(context.pipeline_path, context.workdir / "accel.lock.yaml", measurer.target),
            # A fresh process per side costs seconds: only where memory is the target.
            MemoryMeter(context.pipeline_path if measurer.target == "memory" else None, context.workdir),
            KeepTest.of(recipe, measurer.target),
        )
        self.validator = Validator(baseline, per_sample_results=measurer.target == "throughput")
        self.composer = Composer(baseline, context)
        self.chosen: Chosen = {}
        self.best: tuple[Pipeline, tuple[Choice, ...]] = (baseline, ())
        self.bests: list[Chosen] = [{}]
        self.steps: list[Step] = []
        self.tried: dict[tuple[str, str], str] = {}  # (optimizer, config) -> the rule that tried it
        self.per_candidate = MIN_COMPARE_SECONDS

    def remaining(self) -> float:
        return self.budget - (now() - self.started)

    def plan(self) -> list[tuple[Rule, Candidate]]:
        """The candidates to try, in order; what will not be tried is recorded as a step."""
        planned, skipped = plan(self.recipe, self.composer.baseline, self.report)
        self.steps.extend(skipped)
        self.per_candidate = max(MIN_COMPARE_SECONDS, self.budget * (1 - FINAL_SHARE) / max(len(planned), 1))
        return planned

    def try_candidate(self, rule: Rule, candidate: Candidate) -> Step:
        """Try one candidate in its slot on top of the accepted ones; keep it or not; its step."""
        optimizer = OPTIMIZERS.get(candidate.optimizer)
        config = make_config(optimizer, candidate.params, where=f"rule '{rule.name}': ")
        head = (optimizer.name, dict(candidate.params), rule.name)
        not_tried = self._not_tried(optimizer, config, rule.name)
        if not_tried is not None:
            return self._record(Step(*head, *not_tried))
        slot = slot_of(optimizer)
        trial_choice = {**self.chosen, slot: (optimizer, config, candidate)}
        others = tuple(c[0].name for s, c in self.chosen.items() if s != slot)
        self.progress(f"trying {optimizer.name}")
        try:
            trial = self._measure(trial_choice, slot, rule.guard or self.recipe.guard)
        except Exception as exc:  # noqa: BLE001 - a candidate that breaks is reverted, not fatal
            return self._record(Step(*head, FAILED, _failure_message(exc), composed_with=others))
        if trial is None:
            reason = f"not applicable in the composition: {'; '.join(self.composer.left_out(trial_choice))}"
            return self._record(Step(*head, NOT_APPLICABLE, reason, composed_with=others))
        return self._record(self._judge(head, slot, trial_choice, trial))

    def finish(self) -> EngineResult:
        """The final composition re-measured against the baseline (see .final), as the result."""
        final, message = settle(
            self.timing, self.composer, self.bests, self.remaining, self.budget * FINAL_SHARE, self.progress
        )
        comparison, peaks, measurer = final.comparison, final.peaks, self.timing.measurer
        final_seconds = comparison.candidate.median if final.choices else comparison.baseline.median
        return EngineResult(
            pipeline=final.pipeline,
            target=measurer.target,
            choices=tuple(final.choices),
            steps=tuple(self.steps),
            baseline={
                **measurer.summary(comparison.baseline.median, peaks[0]),
                "peak_measured": self.timing.meter.how,
            },
            final={**measurer.summary(final_seconds, peaks[1]), "timed_in": final.timed_in},
            speedup=comparison.speedup,
            speedup_ci=(comparison.speedup_ci[0], comparison.speedup_ci[1]),
            memory_ratio=final.memory_ratio,
            threads=torch.get_num_threads(),
            message=message,
            elapsed_seconds=now() - self.started,
            recipe=self.recipe.name,
            keep=self.timing.test,
        )

    def _record(self, step: Step) -> Step:
        self.steps.append(step)
        return step

    def _not_tried(self, optimizer: Optimizer, config: Any, rule: str) -> tuple[Verdict, str] | None:
        """Why the candidate is not tried (already tried, no budget left, not applicable), or None."""
        key = (optimizer.name, repr(config))
        if key in self.tried:
            return SKIPPED, f"already tried (rule '{self.tried[key]}')"
        self.tried[key] = rule
        if self.remaining() < MIN_COMPARE_SECONDS + self.budget * FINAL_SHARE * 0.5:
            return SKIPPED, "budget spent"
        slot = slot_of(optimizer)
        base_for_check = self.composer.build({s: c for s, c in self.chosen.items() if s != slot})[0]
        reason = optimizer.applicable(base_for_check, self.context)
        return (NOT_APPLICABLE, reason) if reason else None

    def _measure(self, trial_choice: Chosen, slot: str, guard: Guard) -> _Trial | None:
        """The trial composed, guarded and timed against the current best; None when the candidate
        was left out of the composition."""
        pipeline, choices, setup = self.composer.build(trial_choice)
        if slot not in {c.slot for c in choices}:
            return None
        skip = calibrated_batches([{**c.state, **c.notes} for c in choices])
        fidelity = self.validator.check(pipeline, guard, skip_batches=skip)
        failure = fidelity.failure(guard)
        # A candidate that broke the outputs is timed only briefly: the table still shows its speed.
        share = (
            MIN_COMPARE_SECONDS
            if failure
            else min(self.per_candidate, max(self.remaining() - self.budget * FINAL_SHARE, MIN_COMPARE_SECONDS))
        )
        comparison, notes = self.timing.compare(self.best, (pipeline, choices), share)
        memory_ratio = None
        if self.timing.test.target == "memory":
            base_peak, trial_peak = self.timing.peaks(self.best, (pipeline, choices))
            memory_ratio = trial_peak / base_peak if base_peak > 0 else 1.0
        return _Trial(pipeline, choices, setup, fidelity, failure, comparison, notes, memory_ratio)

    def _judge(self, head: tuple[str, dict[str, Any], str], slot: str, trial_choice: Chosen, trial: _Trial) -> Step:
        """The keep test on a measured trial; a kept trial becomes the current best."""
        own = next((c for c in trial.choices if c.slot == slot), None)
        own_setup = own.recurring_seconds if own is not None else 0.0
        counted = amortized(trial.comparison, own_setup, self.timing.test.passes)
        decision = decide(
            self.timing.test,
            counted.speedup,
            counted.speedup_ci,
            memory_ratio=trial.memory_ratio,
            guard_failure=trial.failure,
            spread_one_time=own_setup > 0,
        )
        if decision.kept:
            applied = {c.slot for c in trial.choices}
            self.chosen = {s: c for s, c in trial_choice.items() if s in applied}
            self.bests.append(self.chosen)
            self.best = (trial.pipeline, trial.choices)
        return Step(
            *head,
            decision.verdict,
            decision.reason + self._said_beside(trial, trial_choice),
            speedup=trial.comparison.speedup,
            speedup_ci=trial.comparison.speedup_ci,
            memory_ratio=trial.memory_ratio,
            fidelity=trial.fidelity.to_dict(),
            setup_seconds=trial.setup_seconds,
            first_call_seconds=trial.comparison.candidate.first_call_seconds,
            composed_with=tuple(c.optimizer for c in trial.choices if c.slot != slot),
            notes={**(own.notes if own is not None else {}), **trial.fresh_notes},
        )

    def _said_beside(self, trial: _Trial, trial_choice: Chosen) -> str:
        """What the reason adds to the decision: where it was timed, what the composition left out."""
        said = ""
        if trial.fresh_notes:
            faults = trial.fresh_notes["faults_per_call"]
            said += (
                f"; {trial.fresh_notes['timed_in']}, page faults per call "
                f"{faults['before']:.0f} -> {faults['after']:.0f}"
            )
        left_out = self.composer.left_out(trial_choice)
        return said + (f"; without {', '.join(left_out)}" if left_out else "")


def run_engine(
    baseline: Pipeline,
    recipe: Recipe,
    context: Context,
    *,
    budget_seconds: float | None = None,
    progress: Progress = lambda message: None,
    report: Any = None,
) -> EngineResult:
    """Search the recipe's candidates for `baseline`; see the module docstring."""
    search = Search(baseline, recipe, context, budget_seconds=budget_seconds, progress=progress, report=report)
    for rule, candidate in search.plan():
        search.try_candidate(rule, candidate)
    return search.finish()


def _failure_message(exc: Exception, limit: int = 160) -> str:
    if isinstance(exc, AccelError):
        return exc.message
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0][:limit] if text else ''}"
