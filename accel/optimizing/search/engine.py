"""The optimize engine: apply candidates, measure each against the current best, keep or revert.

    baseline -> (profile, when a rule needs findings) -> for each matching candidate:
        trial = the accepted optimizations with this candidate in its slot, composed from the baseline
        guard: the trial's outputs against the BASELINE's (errors never accumulate unseen)
        speed: trial against the current best, interleaved A/B/A/B, same thread count
        keep when the guard passes and the gain is beyond noise, else revert with the reason
    -> the final composition re-measured against the baseline; if it is not faster, the search's
       previous best re-measured once; if that is not faster either, the baseline. Nothing kept:
       nothing re-measured.

The recipe's candidates are a set: the engine tries them in the order accel.optimizing.search.budgeting
decides (the primary finding's best cure first, then by predicted saving per second of trial cost,
fresh-process candidates last), unless the recipe says `order: as_written`. Every trial has a
deadline from what is left of the budget: a candidate predicted not to fit is skipped with the
budget it needs, a comparison past its slot is cut at the next round's end. A candidate that fails
the guard (not the speed test) is followed by its optimizer's safer variants (`safer_variants`),
each a measured, guarded candidate of its own, until one passes the guard or they have taken their
share of the budget (budgeting.ladder_stop).

Candidates in one slot are alternatives (every way of replacing the model is one slot), so a trial
replaces that slot's current choice; every trial contains the other accepted optimizations, so
each acceptance re-measures the combination (two wins alone can lose together).

The search is a `Search`: `plan()` the candidates, `try_candidate()` each in the `queue`'s order
(a guard failure at every rung demotes the candidates as coarse), `finish()`. Which
candidates are tried is accel.optimizing.search.planning; how a set of choices is composed, .composer; how a pipeline is timed, .measuring; the last re-measure, .final; the keep test every
candidate (and the final composition) is held to, accel.optimizing.decision.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from accel.core.errors import PipelineError
from accel.core.measure import Measurement, device_sync, now
from accel.core.pipeline import Pipeline
from accel.core.progress import Progress
from accel.optimizing.decision import Cause, KeepTest, Load, Verdict, decide
from accel.optimizing.fresh import FreshTimer
from accel.optimizing.optimizers import OPTIMIZERS, Context, NotApplicable, Optimizer, make_config, slot_of
from accel.optimizing.recipes.schema import Candidate, Guard, Recipe, Rule
from accel.optimizing.search.budgeting import (
    PROCESS_WIDE_SHARE,
    Costs,
    Planned,
    after_guard_failure,
    by_prediction,
    extended,
    extends_closure,
    ladder_stop,
    predicted_savings,
    primary_cure,
    rung_shortfall,
    shortfall,
    tuners_first,
)
from accel.optimizing.search.composer import Choice, Chosen, Composer
from accel.optimizing.search.final import MIN_COMPARE_SECONDS, Final, Timing, measured_win, settle
from accel.optimizing.search.measuring import Measurer, amortized, min_rounds, time_baseline
from accel.optimizing.search.memory import MemoryMeter
from accel.optimizing.search.narrator import Narrator
from accel.optimizing.search.outcome import (
    NEEDS_BUDGET,
    EngineResult,
    Trial,
    budget_note,
    changed_fields,
    failure_message,
    interrupted_result,
    noise_note,
    params_text,
    said_beside,
)
from accel.optimizing.search.planning import Selection, matching_findings, plan, select
from accel.optimizing.search.validation import Validator, calibrated_batches, refuse_user_data_failure
from accel.optimizing.steps import Step

__all__ = ["ACCEPTED", "FAILED", "NOT_APPLICABLE", "REVERTED", "SKIPPED", "Selection", "EngineResult", "Measurer"]
__all__ += ["Search", "amortized", "matching_findings", "run_engine"]


# Share of the budget kept for re-measuring the final composition against the baseline.
FINAL_SHARE = 0.15
ACCEPTED, REVERTED, NOT_APPLICABLE, FAILED, SKIPPED = tuple(Verdict)  # in the enum's order


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
        selection: Selection = Selection(),
    ) -> None:
        self.started = now()
        self.budget = float(budget_seconds if budget_seconds is not None else recipe.budget_seconds)
        self.recipe, self.context, self.report, self.progress = recipe, context, report, progress
        self.selection = selection
        measurer = Measurer(baseline, recipe.target, device_sync(context.machine.device))
        # A fresh process per side costs seconds: only where memory is the target.
        peaks_path = context.pipeline_path if measurer.target == "memory" else None
        self.timing = Timing(
            measurer,
            FreshTimer(context.pipeline_path, context.workdir / "accel.lock.yaml", measurer.target),
            MemoryMeter(peaks_path, context.workdir),
            KeepTest.of(recipe, measurer.target),
        )
        progress("recording the baseline's outputs (each candidate's are checked against them)")
        self.validator = Validator(baseline, per_sample_results=measurer.target == "throughput")
        self.composer = Composer(baseline, context)
        self.chosen: Chosen = {}
        self.best: tuple[Pipeline, tuple[Choice, ...]] = (baseline, ())
        self.bests: list[Chosen] = [{}]
        self.first_win: Final | None = None  # the first win, as its trial measured it against the baseline
        self.steps: list[Step] = []
        self.tried: dict[tuple[str, str], str] = {}  # (optimizer, config) -> what its rule did with it
        self.predicted = predicted_savings(report)
        progress("timing the baseline")
        self.baseline_time = self._time_baseline()
        self.costs = Costs(
            # The fastest call: on a loaded machine one call in a few is stretched many times over,
            # and a prediction from it would skip what fits (a trial past its slot is cut anyway).
            call_seconds=min(self.baseline_time.samples),
            load_seconds=context.load_seconds or 0.0,
            target=measurer.target,
            peak_processes=2 if peaks_path is not None else 0,
        )
        self.left = 0  # planned candidates not yet tried
        self.queue: list[Planned] = []  # plan()'s candidates not yet tried, in order
        self.narrator = Narrator(progress)

    def remaining(self) -> float:
        return self.budget - (now() - self.started)

    def reserve(self) -> float:
        """Seconds kept for re-measuring the final composition against the baseline once there is a
        win (a first win is measured against the baseline: .final.settle): its share, or what a
        full comparison at the baseline's speed takes (half the budget at most)."""
        if self.first_win is None and self.timing.test.target != "memory":  # peaks are always re-read
            return 0.0
        return min(max(self.budget * FINAL_SHARE, self.costs.comparison_seconds()), self.budget / 2)

    def plan(self) -> list[tuple[Rule, Candidate]]:
        """The candidates to try, in order; what will not be tried is recorded as a step."""
        found, skipped = plan(self.recipe, self.composer.baseline, self.report)
        found, unselected = select(found, self.selection)
        self.steps.extend(skipped + unselected)
        self.predicted = extended(self.predicted, [OPTIMIZERS.get(c.optimizer) for _, c in found])
        planned = [
            Planned.of(rule, candidate, self.predicted, self.costs, self.recipe.guard) for rule, candidate in found
        ]
        if self.recipe.order == "by_prediction":
            planned = by_prediction(planned, primary_cure(self.report, {p.optimizer.name for p in planned}))
        self.left, self.queue = len(planned), planned
        self.narrator.plan(len(planned), skipped + unselected)
        return [(p.rule, p.candidate) for p in planned]

    def try_candidate(self, rule: Rule, candidate: Candidate) -> Step:
        """Try one candidate in its slot on top of the accepted ones; keep it or not; its step.
        One that fails the guard is followed by its safer variants until one passes it."""
        sharing, before, model = max(self.left, 1), self._available(), self.chosen.get("model")
        self.left = max(self.left - 1, 0)
        self.narrator.start(candidate.optimizer)
        started = now()
        step, config = self._try(rule, candidate, sharing)
        if step.cause is Cause.GUARD and config is not None:
            optimizer, held = OPTIMIZERS.get(candidate.optimizer), False
            for index, variant in enumerate(optimizer.safer_variants(config, self.context.machine)):
                params = {**candidate.params, **changed_fields(config, variant)}
                last, started = now() - started, now()
                stop = ladder_stop(before, self._available()) if index else None
                stop = stop or rung_shortfall(last, self._available())
                if stop is not None:  # the others keep the rest of the budget
                    said = f"safer variant ({params_text(params)}): {stop}"
                    self._record(Step(candidate.optimizer, params, rule.name, SKIPPED, said))
                    break
                tried, _ = self._try(rule, Candidate(candidate.optimizer, params), sharing, safer=True)
                if tried.cause is not Cause.GUARD:
                    held = tried.verdict in (ACCEPTED, REVERTED)
                    break
            if not held and self.recipe.order == "by_prediction":
                self.queue, said = after_guard_failure(self.queue, optimizer)
                if said:
                    self.narrator.say(said)
        if self.chosen.get("model") is not model and self.recipe.order == "by_prediction":
            self.queue, said = tuners_first(self.queue, self.best[0], self.context, self.report)
            if said:
                self.narrator.say(said)
        return step

    def interrupted(self) -> EngineResult:
        """Stopped by Ctrl-C or SIGTERM: the steps decided and the best so far, the trial under way
        abandoned (see outcome.interrupted_result)."""
        summary = self.timing.measurer.summary(self.baseline_time.median, None)
        counts = (self.narrator.decided, self.narrator.planned)
        return interrupted_result(self.best, tuple(self.steps), summary, counts, **self._identity())

    def finish(self) -> EngineResult:
        """The final composition re-measured against the baseline (see .final), as the result."""
        final, message = settle(
            self.timing,
            self.composer,
            self.bests,
            self.remaining,
            self.reserve(),
            self.progress,
            self.baseline_time,
            self.first_win,
        )
        comparison, peaks, measurer = final.comparison, final.peaks, self.timing.measurer
        final_seconds = comparison.candidate.median if final.choices else comparison.baseline.median
        return EngineResult(
            pipeline=final.pipeline,
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
            message=message
            + noise_note(self.steps, Load.now())
            + budget_note(self.steps, Load.now(), self.costs.call_seconds),
            **self._identity(),
        )

    def _identity(self) -> dict[str, Any]:
        """What every result of this search says about it: target, threads, time taken, recipe, keep test."""
        return {
            "target": self.timing.measurer.target,
            "threads": torch.get_num_threads(),
            "elapsed_seconds": now() - self.started,
            "recipe": self.recipe.name,
            "keep": self.timing.test,
        }

    def _time_baseline(self) -> Measurement:
        """The baseline's timed call, a few times: what the trials' costs are predicted from (and
        the baseline's time when nothing is kept). A throughput pass already ran in the validator."""
        measurer = self.timing.measurer
        try:
            return time_baseline(measurer.call(self.composer.baseline), measurer, warm=self.validator.results is None)
        except Exception as exc:  # noqa: BLE001 - the user's code: any error is theirs, shown in one line
            raise PipelineError(
                f"the pipeline raised while its baseline was timed: {failure_message(exc)}",
                "fix the pipeline (accel profile FILE shows which stage raises)",
            ) from exc

    def _record(self, step: Step) -> Step:
        saving = self.predicted.get(step.optimizer)
        if saving is not None and step.predicted_speedup is None:
            step = dataclasses.replace(step, predicted_speedup=1.0 / max(1.0 - saving, 1e-9))
        self.steps.append(step)
        self.narrator.row(step)
        return step

    def _try(self, rule: Rule, candidate: Candidate, sharing: int, safer: bool = False) -> tuple[Step, Any]:
        """One candidate (a safer variant too) tried: its step, and its config (None when the
        recipe's parameters do not make one)."""
        optimizer = OPTIMIZERS.get(candidate.optimizer)
        config = make_config(optimizer, candidate.params, where=f"rule '{rule.name}': ")
        said = f"safer variant ({params_text(candidate.params)}): " if safer else ""
        head = (optimizer.name, dict(candidate.params), rule.name)
        guard = rule.guard or self.recipe.guard
        not_tried = self._not_tried(optimizer, config, rule.name, guard)
        if not_tried is not None:
            return self._record(Step(*head, not_tried[0], said + not_tried[1])), config
        slot = slot_of(optimizer)
        trial_choice = {**self.chosen, slot: (optimizer, config, candidate)}
        others = tuple(c[0].name for s, c in self.chosen.items() if s != slot)
        self.narrator.say(f"trying {optimizer.name}" + (f" ({params_text(candidate.params)})" if safer else ""))
        slot_seconds = max(self.costs.trial_seconds(optimizer, guard), self._available() / sharing)
        deadline = min(now() + slot_seconds, self.started + self.budget - self.reserve())
        try:
            trial = self._measure(trial_choice, slot, guard, deadline)
        except Exception as exc:  # noqa: BLE001 - a candidate that breaks is reverted, not fatal
            refuse_user_data_failure(exc, self.composer.baseline, optimizer.name, slot)  # unless the user's code broke
            verdict = NOT_APPLICABLE if isinstance(exc, NotApplicable) else FAILED  # seen only once applied
            return self._record(Step(*head, verdict, said + failure_message(exc), composed_with=others)), config
        if trial is None:
            reason = f"not applicable in the composition: {'; '.join(self.composer.left_out(trial_choice))}"
            return self._record(Step(*head, NOT_APPLICABLE, said + reason, composed_with=others)), config
        step = self._judge(head, slot, trial_choice, trial)
        return self._record(dataclasses.replace(step, reason=said + step.reason)), config

    def _available(self) -> float:
        """Seconds left for candidates: what remains less the final re-measure's reserve."""
        return self.remaining() - self.reserve()

    def _not_tried(self, optimizer: Optimizer, config: Any, rule: str, guard: Guard) -> tuple[Verdict, str] | None:
        """Why the candidate is not tried (tried or skipped before, no budget for its trial, not applicable), or None."""
        key = (optimizer.name, repr(optimizer.resolved(config)))
        if key in self.tried:  # "tried (rule 'x')", or never tried: "skipped for want of budget (rule 'x')"
            return SKIPPED, f"already {self.tried[key]}"
        self.tried[key] = f"tried (rule '{rule}')"
        extender = next((o for o, _, _ in self.chosen.values() if optimizer.name in extends_closure(o)), None)
        if extender is not None:
            return SKIPPED, f"{extender.name} (kept) already does what it does, and more"
        predicted, available = self.costs.trial_seconds(optimizer, guard), self._available()
        cap = PROCESS_WIDE_SHARE * self.budget if optimizer.process_wide else None
        needs = shortfall(predicted, available, cap, self.budget)
        if needs is not None:
            self.tried[key] = f"skipped for want of budget (rule '{rule}')"
            fresh = f", at most {PROCESS_WIDE_SHARE:.0%} of the budget in fresh processes" if cap is not None else ""
            kept = f" ({self.reserve():.0f} s more kept to re-measure the final pipeline)" if self.reserve() else ""
            return SKIPPED, (
                f"{NEEDS_BUDGET}{needs} s more budget: its trial is predicted at ~{predicted:.0f} s, "
                f"{max(available, 0.0):.0f} s were left for trials{kept}{fresh}"
            )
        slot = slot_of(optimizer)
        reason = self.composer.why_not(optimizer, {s: c for s, c in self.chosen.items() if s != slot})
        return (NOT_APPLICABLE, reason) if reason else None

    def _measure(self, trial_choice: Chosen, slot: str, guard: Guard, deadline: float) -> Trial | None:
        """The trial composed, guarded and timed against the current best until `deadline` at
        most; None when the candidate was left out of the composition."""
        pipeline, choices, setup = self.composer.build(trial_choice)
        if slot not in {c.slot for c in choices}:
            return None
        skip = calibrated_batches([{**c.state, **c.notes} for c in choices])
        fidelity = self.validator.check(pipeline, guard, skip_batches=skip)
        failure = fidelity.failure(guard)
        # A candidate that broke the outputs is timed only briefly (the table still shows its speed):
        # its deadline too, or its rounds ran to the fewest a comparison takes (16 s against eager
        # GPT-2 generate(): 7 rounds of 1.9 s and the warm-up calls).
        deadline = min(deadline, now() + MIN_COMPARE_SECONDS) if failure else self._rounds_floor(deadline)
        seconds = MIN_COMPARE_SECONDS if failure else max(deadline - now(), MIN_COMPARE_SECONDS)
        # A trial decides keep or revert: its rounds stop once the interval is clear of the keep
        # threshold (the memory target decides on peaks, timed for its slowdown bound: not stopped).
        speed = not failure and self.timing.test.target != "memory"
        threshold = self.timing.test.min_speedup if speed else None
        comparison, notes = self.timing.compare(
            self.best, (pipeline, choices), seconds, deadline=deadline, threshold=threshold
        )
        memory_ratio = None
        if self.timing.test.target == "memory":
            base_peak, trial_peak = self.timing.peaks(self.best, (pipeline, choices))
            memory_ratio = trial_peak / base_peak if base_peak > 0 else 1.0
        cut = not (notes or failure) and len(comparison.candidate.samples) < min_rounds(self.timing.test.target)
        return Trial(pipeline, choices, setup, fidelity, failure, comparison, notes, memory_ratio, cut)

    def _rounds_floor(self, deadline: float) -> float:
        """The trial's deadline, moved on so that its comparison gets the rounds a comparison takes
        (at the current best's speed) where the budget left for trials holds them: a setup past its
        prediction (GPT-2's fused int8 step: fusion and quantization 40 s against ~5 s predicted)
        otherwise left 3 rounds, too few to decide a 10% effect, and the setup was spent for nothing."""
        timed = dataclasses.replace(self.costs, call_seconds=self.costs.trial_call_seconds)
        floor = now() + timed.comparison_seconds()
        return max(deadline, min(floor, self.started + self.budget - self.reserve()))

    def _judge(self, head: tuple[str, dict[str, Any], str], slot: str, trial_choice: Chosen, trial: Trial) -> Step:
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
            load=Load.now(),
        )
        if decision.kept:
            if self.first_win is None and self.timing.test.target != "memory":
                self.first_win = measured_win(trial.pipeline, trial.choices, counted, decision)
            applied = {c.slot for c in trial.choices}
            self.chosen = {s: c for s, c in trial_choice.items() if s in applied}
            self.bests.append(self.chosen)
            self.best = (trial.pipeline, trial.choices)
            fastest = min(trial.comparison.candidate.samples, default=None)
            self.costs = dataclasses.replace(self.costs, best_call_seconds=fastest)
        return Step(
            *head,
            decision.verdict,
            decision.reason + said_beside(trial, self.composer.left_out(trial_choice)),
            speedup=trial.comparison.speedup,
            speedup_ci=trial.comparison.speedup_ci,
            memory_ratio=trial.memory_ratio,
            fidelity=trial.fidelity.to_dict(),
            setup_seconds=trial.setup_seconds,
            first_call_seconds=trial.comparison.candidate.first_call_seconds,
            composed_with=tuple(c.optimizer for c in trial.choices if c.slot != slot),
            notes={**(own.notes if own is not None else {}), **trial.fresh_notes},
            cause=decision.cause,
        )


def run_engine(
    baseline: Pipeline,
    recipe: Recipe,
    context: Context,
    *,
    budget_seconds: float | None = None,
    progress: Progress = lambda message: None,
    report: Any = None,
    selection: Selection = Selection(),
) -> EngineResult:
    """Search the recipe's candidates for `baseline`; see the module docstring."""
    search = Search(
        baseline, recipe, context, budget_seconds=budget_seconds, progress=progress, report=report, selection=selection
    )
    try:
        search.plan()
        while search.queue:  # a guard failure may re-order what is left (budgeting.after_guard_failure)
            head = search.queue.pop(0)
            search.try_candidate(head.rule, head.candidate)
        return search.finish()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (see accel.cli.main): keep what was decided
        return search.interrupted()
