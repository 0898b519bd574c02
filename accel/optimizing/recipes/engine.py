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
each acceptance re-measures the combination (two wins alone can lose together). How a pipeline is
timed and compared is accel.optimizing.recipes.measuring; this module searches and decides.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from accel.core.errors import AccelError
from accel.core.measure import Comparison, device_sync, now
from accel.core.pipeline import Pipeline
from accel.optimizing.fresh import FreshTimer
from accel.optimizing.optimizers import (
    OPTIMIZERS,
    SLOT_ORDER,
    Context,
    Optimizer,
    make_config,
    process_wide_among,
    slot_of,
)
from accel.optimizing.recipes.measuring import Measurer, amortized, compare_pipelines
from accel.optimizing.recipes.memory import MemoryMeter
from accel.optimizing.recipes.schema import Candidate, Guard, Recipe, Rule
from accel.optimizing.recipes.validation import Validator, calibrated_batches
from accel.profiling.report import SEVERITIES

Progress = Callable[[str], None]

# No comparison gets less than this, however small the remaining budget: fewer rounds than this
# cannot separate a 3% effect from noise.
MIN_COMPARE_SECONDS = 0.5
# Share of the budget kept for re-measuring the final composition against the baseline.
FINAL_SHARE = 0.15
ACCEPTED, REVERTED, NOT_APPLICABLE, FAILED, SKIPPED = "accepted", "reverted", "not applicable", "failed", "skipped"


@dataclasses.dataclass(frozen=True)
class Step:
    """What happened to one candidate."""

    optimizer: str
    params: dict[str, Any]
    rule: str
    verdict: str
    reason: str
    speedup: float | None = None
    speedup_ci: tuple[float, float] | None = None
    memory_ratio: float | None = None
    fidelity: dict[str, Any] | None = None
    setup_seconds: float = 0.0
    first_call_seconds: float | None = None
    composed_with: tuple[str, ...] = ()
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["speedup_ci"] = list(self.speedup_ci) if self.speedup_ci else None
        data["composed_with"] = list(self.composed_with)
        return data


@dataclasses.dataclass(frozen=True)
class Choice:
    """An accepted optimization: what the lock records for it."""

    optimizer: str
    params: dict[str, Any]
    state: dict[str, Any]
    slot: str
    setup_seconds: float = 0.0
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The part of setup_seconds paid again whenever the lock is applied in a new process: what the
    # passes amortize (an export is paid once; a session, a compile, a cache fill every time).
    recurring_seconds: float = 0.0


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


def rule_matches(rule: Rule, pipeline: Pipeline, report: Any) -> str | None:
    """None when the rule applies, else why not."""
    when = rule.when
    if when.has_source is not None and when.has_source != pipeline.has_source:
        return "the pipeline has a source" if pipeline.has_source else "the pipeline has no source"
    if when.has_generate is not None and when.has_generate != (pipeline.generate is not None):
        return (
            "the pipeline runs a generate loop"
            if pipeline.generate is not None
            else "the pipeline has no generate loop"
        )
    if when.max_batch_size is not None and pipeline.batch_size > when.max_batch_size:
        return f"batch_size {pipeline.batch_size} > {when.max_batch_size}"
    if when.min_batch_size is not None and pipeline.batch_size < when.min_batch_size:
        return f"batch_size {pipeline.batch_size} < {when.min_batch_size}"
    if when.findings:
        if report is None:
            return "no profile to match findings against"
        if not matching_findings(rule, report):
            return f"no finding of kind {', '.join(when.findings)} at {when.min_severity} severity or above"
    return None


def matching_findings(rule: Rule, report: Any) -> list[Any]:
    rank = SEVERITIES.index(rule.when.min_severity)
    return [f for f in report.findings if f.kind in rule.when.findings and SEVERITIES.index(f.severity) <= rank]


def rule_candidates(rule: Rule, report: Any) -> list[Candidate]:
    if not rule.recommended:
        return list(rule.candidates)
    names: list[str] = []
    for finding in matching_findings(rule, report) if report is not None else []:
        names.extend(r for r in finding.recommendations if r in OPTIMIZERS and r not in names)
    return [Candidate(optimizer=name) for name in names]


def slot_rank(slot: str) -> tuple[int, str]:
    return (SLOT_ORDER.index(slot), "") if slot in SLOT_ORDER else (len(SLOT_ORDER), slot)


class Composer:
    """Builds the pipeline for a set of chosen optimizations, composed from the baseline in slot
    order, reusing already-built prefixes (an export is not repeated for every trial).

    A choice that is not applicable on top of the ones before it is left out of the composition
    (channels-last convolutions once the model slot holds an ONNX Runtime session): the choices
    returned are the ones applied, and `left_out` says why the others are not."""

    def __init__(self, baseline: Pipeline, context: Context) -> None:
        self.baseline = baseline
        self.context = context
        self._cache: dict[tuple, tuple[Pipeline, tuple[Choice, ...]]] = {(): (baseline, ())}
        self._left_out: dict[tuple, str] = {}

    def build(self, chosen: dict[str, tuple[Optimizer, Any, Candidate]]) -> tuple[Pipeline, tuple[Choice, ...], float]:
        ordered = sorted(chosen.items(), key=lambda item: slot_rank(item[0]))
        key: tuple = ()
        pipeline = self.baseline
        choices: tuple[Choice, ...] = ()
        setup = 0.0
        for slot, (optimizer, config, candidate) in ordered:
            key = key + ((slot, optimizer.name, repr(config)),)
            if key not in self._cache:
                # (A process-wide setting, timed in fresh processes, holds whatever the model is.)
                recheck = choices and not optimizer.process_wide
                why_not = optimizer.applicable(pipeline, self.context) if recheck else None
                if why_not:
                    self._left_out[key] = f"{optimizer.name} ({why_not} once {_names(choices)} is applied)"
                    self._cache[key] = (pipeline, choices)
                    continue
                applied = optimizer.apply(pipeline, config, self.context)
                setup += applied.setup_seconds
                choice = Choice(
                    optimizer.name,
                    dict(candidate.params),
                    dict(applied.state),
                    slot,
                    applied.setup_seconds,
                    dict(applied.notes),
                    applied.per_process_seconds,
                )
                self._cache[key] = (applied.pipeline, choices + (choice,))
            pipeline, choices = self._cache[key]
        return pipeline, choices, setup

    def left_out(self, chosen: dict[str, tuple[Optimizer, Any, Candidate]]) -> list[str]:
        """Why each choice of `chosen` that build() left out of the composition is not in it."""
        ordered = sorted(chosen.items(), key=lambda item: slot_rank(item[0]))
        keys = [tuple((s, o.name, repr(c)) for s, (o, c, _) in ordered[: i + 1]) for i in range(len(ordered))]
        return [self._left_out[k] for k in keys if k in self._left_out]


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
    started = now()
    budget = float(budget_seconds if budget_seconds is not None else recipe.budget_seconds)

    def remaining() -> float:
        return budget - (now() - started)

    measurer = Measurer(baseline, recipe.target, device_sync(context.machine.device))
    validator = Validator(baseline, per_sample_results=measurer.target == "throughput")
    plan: list[tuple[Rule, Candidate]] = []
    steps: list[Step] = []
    for rule in recipe.rules:
        why_not = rule_matches(rule, baseline, report)
        for candidate in rule_candidates(rule, report) if why_not is None else rule.candidates:
            if why_not is None:
                plan.append((rule, candidate))
            else:
                steps.append(
                    Step(
                        candidate.optimizer,
                        dict(candidate.params),
                        rule.name,
                        SKIPPED,
                        f"rule does not apply: {why_not}",
                    )
                )
    per_candidate = max(MIN_COMPARE_SECONDS, budget * (1 - FINAL_SHARE) / max(len(plan), 1))
    composer = Composer(baseline, context)
    chosen: dict[str, tuple[Optimizer, Any, Candidate]] = {}
    best = baseline
    best_choices: tuple[Choice, ...] = ()
    # A fresh process per side costs seconds: only where memory is the target.
    meter = MemoryMeter(context.pipeline_path if measurer.target == "memory" else None, context.workdir)
    fresh = FreshTimer(context.pipeline_path, context.workdir / "accel.lock.yaml", measurer.target)
    tried: dict[tuple[str, str], str] = {}
    # The search's earlier bests, in the order they were replaced: the fallback when the final
    # composition does not hold up when re-measured.
    history: list[dict[str, tuple[Optimizer, Any, Candidate]]] = []
    for rule, candidate in plan:
        optimizer = OPTIMIZERS.get(candidate.optimizer)
        config = make_config(optimizer, candidate.params, where=f"rule '{rule.name}': ")
        step: dict[str, Any] = dict(optimizer=optimizer.name, params=dict(candidate.params), rule=rule.name)
        if (optimizer.name, repr(config)) in tried:
            steps.append(
                Step(**step, verdict=SKIPPED, reason=f"already tried (rule '{tried[optimizer.name, repr(config)]}')")
            )
            continue
        tried[optimizer.name, repr(config)] = rule.name
        if remaining() < MIN_COMPARE_SECONDS + budget * FINAL_SHARE * 0.5:
            steps.append(Step(**step, verdict=SKIPPED, reason="budget spent"))
            continue
        slot = slot_of(optimizer)
        base_for_check = composer.build({s: c for s, c in chosen.items() if s != slot})[0]
        reason = optimizer.applicable(base_for_check, context)
        if reason:
            steps.append(Step(**step, verdict=NOT_APPLICABLE, reason=reason))
            continue
        progress(f"trying {optimizer.name}")
        trial_choice = {**chosen, slot: (optimizer, config, candidate)}
        others = tuple(c[0].name for s, c in chosen.items() if s != slot)
        guard: Guard = rule.guard or recipe.guard
        try:
            trial, trial_choices, setup = composer.build(trial_choice)
            if slot not in {c.slot for c in trial_choices}:
                reason = f"not applicable in the composition: {'; '.join(composer.left_out(trial_choice))}"
                steps.append(Step(**step, verdict=NOT_APPLICABLE, reason=reason, composed_with=others))
                continue
            others = tuple(c.optimizer for c in trial_choices if c.slot != slot)
            skip = calibrated_batches([{**c.state, **c.notes} for c in trial_choices])
            fidelity = validator.check(trial, guard, skip_batches=skip)
            failure = fidelity.failure(guard)
            # A candidate that broke the outputs is timed only briefly: the table still shows its speed.
            share = (
                MIN_COMPARE_SECONDS
                if failure
                else min(per_candidate, max(remaining() - budget * FINAL_SHARE, MIN_COMPARE_SECONDS))
            )
            comparison, fresh_notes = _compare(measurer, fresh, (best, best_choices), (trial, trial_choices), share)
            memory_ratio = None
            if measurer.target == "memory":
                base_peak, trial_peak = meter.pair(
                    (measurer.call(best), best_choices), (measurer.call(trial), trial_choices)
                )
                memory_ratio = trial_peak / base_peak if base_peak > 0 else 1.0
        except Exception as exc:  # noqa: BLE001 - a candidate that breaks is reverted, not fatal
            message = exc.message if isinstance(exc, AccelError) else f"{type(exc).__name__}: {_first_line(exc)}"
            steps.append(Step(**step, verdict=FAILED, reason=message, composed_with=others))
            continue
        speed: dict[str, Any] = dict(
            speedup=comparison.speedup,
            speedup_ci=comparison.speedup_ci,
            memory_ratio=memory_ratio,
            fidelity=fidelity.to_dict(),
            setup_seconds=setup,
            first_call_seconds=comparison.candidate.first_call_seconds,
            composed_with=others,
            notes={**next((c.notes for c in trial_choices if c.slot == slot), {}), **fresh_notes},
        )
        own_setup = next((c.recurring_seconds for c in trial_choices if c.slot == slot), 0.0)
        verdict_reason = failure or _keep_reason(
            recipe, amortized(comparison, own_setup, recipe.passes), memory_ratio, own_setup
        )
        if fresh_notes:
            faults = fresh_notes["faults_per_call"]
            verdict_reason += (
                f"; {fresh_notes['timed_in']}, page faults per call {faults['before']:.0f} -> {faults['after']:.0f}"
            )
        left_out = composer.left_out(trial_choice)
        if left_out:
            verdict_reason += f"; without {', '.join(left_out)}"
        if failure is None and verdict_reason.startswith("kept"):
            history.append(chosen)
            applied_slots = {c.slot for c in trial_choices}
            chosen = {s: c for s, c in trial_choice.items() if s in applied_slots}
            best, best_choices = trial, trial_choices
            steps.append(Step(**step, verdict=ACCEPTED, reason=verdict_reason, **speed))
        else:
            steps.append(Step(**step, verdict=REVERTED, reason=verdict_reason, **speed))
    return _finish(
        baseline, composer, chosen, history, measurer, recipe, steps, budget, remaining, started, progress, meter, fresh
    )


def _compare(
    measurer: Measurer,
    fresh: FreshTimer,
    best: tuple[Pipeline, tuple[Choice, ...]],
    trial: tuple[Pipeline, tuple[Choice, ...]],
    seconds: float,
) -> tuple[Comparison, dict[str, Any]]:
    """Interleaved in this process; in fresh processes rebuilt from the lock entries where the two
    sides differ in a process-wide setting, which one process cannot hold for one side only."""
    if process_wide_among(c.optimizer for c in best[1]) == process_wide_among(c.optimizer for c in trial[1]):
        return compare_pipelines(measurer, best[0], trial[0], seconds), {}
    timed = fresh.compare(best[1], trial[1], seconds)
    return timed.comparison, timed.notes()


def _first_line(exc: Exception, limit: int = 160) -> str:
    text = str(exc)
    return text.splitlines()[0][:limit] if text else ""


def _keep_reason(recipe: Recipe, comparison: Comparison, memory_ratio: float | None, setup_seconds: float) -> str:
    low, high = comparison.speedup_ci
    keep = recipe.keep
    if recipe.target == "memory":
        if memory_ratio is None or memory_ratio > 1 - keep.min_memory_saving:
            return f"saves too little memory (x{memory_ratio:.2f}, needs x{1 - keep.min_memory_saving:.2f} or less)"
        if high < 1 / keep.max_slowdown:
            return f"saves memory but {1 / comparison.speedup:.2f}x slower, beyond the {keep.max_slowdown}x allowed"
        return f"kept: peak memory x{memory_ratio:.2f}"
    counted = f", its per-process cost spread over {recipe.passes} passes" if setup_seconds > 0 else ""
    if comparison.faster_beyond(keep.min_speedup):
        return f"kept: interval above {keep.min_speedup}x{counted}"
    if high < 1.0:
        return f"slower{counted}"
    return f"not faster beyond noise (interval reaches {low:.2f}x, needs > {keep.min_speedup}x{counted})"


def _finish(
    baseline: Pipeline,
    composer: Composer,
    chosen: dict,
    history: list[dict],
    measurer: Measurer,
    recipe: Recipe,
    steps: list[Step],
    budget: float,
    remaining: Callable[[], float],
    started: float,
    progress: Progress,
    meter: MemoryMeter,
    fresh: FreshTimer,
) -> EngineResult:
    progress("re-measuring the final pipeline against the baseline")
    final = _final_check(
        baseline, composer, chosen, measurer, recipe, meter, fresh, min(remaining(), budget * FINAL_SHARE)
    )
    message = (
        f"kept {', '.join(c.optimizer for c in final.choices)}"
        if final.choices
        else "no candidate helped: the lock is empty"
    )
    if final.choices and final.slower:
        # The composition is reverted whole. Two wins can lose together, and a re-measure can land
        # on the wrong side of the threshold: the search's previous best (the composition before
        # its last acceptance, itself measured a win) is re-measured once, on what budget is left.
        failed = final
        previous = history[-1] if history else {}
        message = f"the combination of {_names(failed.choices)} measured {failed.measured} against the baseline"
        if previous:
            progress("re-measuring the search's previous best against the baseline")
            fallback = _final_check(baseline, composer, previous, measurer, recipe, meter, fresh, remaining())
            if not fallback.slower:
                final = fallback
                message += f"; kept {_names(final.choices)} (the search's previous best: {final.measured})"
            else:
                message += f"; {_names(fallback.choices)} (the previous best) measured {fallback.measured}"
        if final is failed or final.slower:
            message += ": keeping the baseline, the lock is empty"
            final = _as_baseline(final, baseline)
    if not final.choices:
        final = dataclasses.replace(
            final, comparison=dataclasses.replace(final.comparison, speedup=1.0, speedup_ci=(1.0, 1.0))
        )
    comparison, peaks = final.comparison, final.peaks
    return EngineResult(
        pipeline=final.pipeline,
        target=measurer.target,
        choices=tuple(final.choices),
        steps=tuple(steps),
        baseline={**measurer.summary(comparison.baseline.median, peaks[0]), "peak_measured": meter.how},
        final={
            **measurer.summary(comparison.candidate.median if final.choices else comparison.baseline.median, peaks[1]),
            "timed_in": final.timed_in,
        },
        speedup=comparison.speedup,
        speedup_ci=(comparison.speedup_ci[0], comparison.speedup_ci[1]),
        memory_ratio=final.memory_ratio,
        threads=torch.get_num_threads(),
        message=message,
        elapsed_seconds=now() - started,
    )


@dataclasses.dataclass(frozen=True)
class _Final:
    """One composition re-measured against the baseline."""

    pipeline: Pipeline
    choices: tuple[Choice, ...]
    comparison: Comparison
    memory_ratio: float | None
    peaks: tuple[int | None, int | None]
    slower: bool
    measured: str
    timed_in: str  # "this process", or "fresh processes, N a side" where a process-wide setting differs


def _final_check(
    baseline: Pipeline,
    composer: Composer,
    chosen: dict,
    measurer: Measurer,
    recipe: Recipe,
    meter: MemoryMeter,
    fresh: FreshTimer,
    seconds: float,
) -> _Final:
    pipeline, choices, _ = composer.build(chosen)
    comparison, notes = _compare(
        measurer, fresh, (baseline, ()), (pipeline, choices), max(MIN_COMPARE_SECONDS, seconds)
    )
    memory_ratio: float | None = None
    peaks: tuple[int | None, int | None] = (None, None)
    if measurer.target == "memory" or chosen:
        peaks = meter.pair((measurer.call(baseline), ()), (measurer.call(pipeline), choices))
        memory_ratio = peaks[1] / peaks[0] if peaks[0] else None
    # The composition is held to the same test as each candidate: its whole interval, with every
    # one-time cost spread over the declared passes, above the keep threshold.
    counted = amortized(comparison, sum(c.recurring_seconds for c in choices), recipe.passes)
    if recipe.target == "memory":
        slower = memory_ratio is None or memory_ratio > 1 - recipe.keep.min_memory_saving
    else:
        slower = not counted.faster_beyond(recipe.keep.min_speedup)
    low, high = counted.speedup_ci
    measured = (
        f"peak memory x{memory_ratio:.2f}"
        if recipe.target == "memory" and memory_ratio is not None
        else f"{counted.speedup:.2f}x (interval {low:.2f}-{high:.2f}x over {recipe.passes} passes, "
        f"needs above {recipe.keep.min_speedup}x)"
    )
    timed_in = notes.get("timed_in", "this process")
    return _Final(pipeline, choices, comparison, memory_ratio, peaks, slower, measured, timed_in)


def _as_baseline(final: _Final, baseline: Pipeline) -> _Final:
    """The baseline in the place of a composition that was reverted."""
    comparison = dataclasses.replace(
        final.comparison, candidate=final.comparison.baseline, speedup=1.0, speedup_ci=(1.0, 1.0)
    )
    return dataclasses.replace(
        final,
        pipeline=baseline,
        choices=(),
        comparison=comparison,
        memory_ratio=1.0 if final.memory_ratio is not None else None,
        peaks=(final.peaks[0], final.peaks[0]),
    )


def _names(choices: tuple[Choice, ...]) -> str:
    return ", ".join(c.optimizer for c in choices)
