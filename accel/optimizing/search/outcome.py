"""What a search comes to: its result (the lock's entries, the steps, the final measurement), and
the words its summary adds about candidates and their safer variants."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from accel.core.errors import AccelError
from accel.core.measure import Comparison
from accel.core.pipeline import Pipeline
from accel.optimizing.decision import Cause, KeepTest, Load, Verdict
from accel.optimizing.lock import PIPELINE_LOCK, LockEntry
from accel.optimizing.search.composer import Choice
from accel.optimizing.steps import Step


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
    # Interrupted (Ctrl-C, SIGTERM): the steps decided so far, what was kept by then, no final re-measure.
    partial: bool = False
    lock_kind: ClassVar[str] = PIPELINE_LOCK

    def lock_entries(self) -> tuple[LockEntry, ...]:
        return tuple(LockEntry(c.optimizer, c.params, c.state) for c in self.choices)


def interrupted_result(
    best: tuple[Pipeline, tuple[Choice, ...]],
    steps: tuple[Step, ...],
    baseline: dict[str, Any],
    counts: tuple[int, int],
    **fields: Any,
) -> EngineResult:
    """The result of a search stopped by Ctrl-C or SIGTERM after `counts` (decided, planned) candidates:
    the current best (each of its choices passed the guard and the keep test), its speed-up
    estimated as the product of its accepted steps' (each measured against the best before it),
    and no final re-measure."""
    (pipeline, choices), (decided, planned) = best, counts
    kept = {c.optimizer for c in choices}
    speedup, low, high = 1.0, 1.0, 1.0
    for step in steps:
        if step.verdict is Verdict.ACCEPTED and step.optimizer in kept and step.speedup and step.speedup_ci:
            speedup, low, high = speedup * step.speedup, low * step.speedup_ci[0], high * step.speedup_ci[1]
    what = (
        f"kept and verified {', '.join(sorted(kept))} (about {speedup:.2f}x from the accepted steps; "
        "the final composition was not re-measured against the baseline)"
        if choices
        else "nothing was kept: the lock is empty"
    )
    return EngineResult(
        pipeline=pipeline,
        choices=choices,
        steps=steps,
        baseline=baseline,
        final={"timed_in": "not re-measured: interrupted"},
        speedup=speedup,
        speedup_ci=(low, high),
        memory_ratio=None,
        message=f"interrupted after {decided} of {planned} candidates: {what}",
        partial=True,
        **fields,
    )


def changed_fields(config: Any, variant: Any) -> dict[str, Any]:
    """The fields of config dataclass `variant` that differ from `config`'s: a variant's recipe parameters."""
    return {
        field.name: getattr(variant, field.name)
        for field in dataclasses.fields(variant)
        if getattr(variant, field.name) != getattr(config, field.name)
    }


def noise_note(steps: list[Step], load: Load | None) -> str:
    """What the summary adds when candidates were too noisy to decide: which, and the load."""
    noisy = [step.optimizer for step in steps if step.cause is Cause.TOO_NOISY]
    if not noisy:
        return ""
    where = load.describe() if load is not None else "load average unknown"
    why = (
        f"the machine was too busy ({where}): rerun on a quieter machine or with fewer --threads"
        if load is not None and load.busy
        else f"their timings varied too much ({where}): rerun with more --budget or on a quieter machine"
    )
    return f"; too noisy to decide on {', '.join(noisy)}: {why}"


# The skip reason of a candidate whose predicted trial did not fit the budget left (engine._not_tried).
NEEDS_BUDGET = "needs ~"


def budget_note(steps: list[Step], load: Load | None, call_seconds: float) -> str:
    """What the summary adds when no candidate was measured because none fit the budget: the
    baseline's call time, the load, and what to do (the budget each needs is in its row)."""
    measured = [step for step in steps if step.speedup is not None]
    unfit = [step for step in steps if step.verdict == Verdict.SKIPPED and step.reason.startswith(NEEDS_BUDGET)]
    if measured or not unfit:
        return ""
    where = f"; {load.describe()}" if load is not None else ""
    fix = (
        "fewer --threads or a quieter machine, or a larger --budget"
        if load is not None and load.busy
        else "a larger --budget"
    )
    return (
        f"; no candidate fit the budget: the baseline took {call_seconds:.3g} s a call{where} "
        f"(each row says how much more budget it needs): {fix}"
    )


def params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in params.items())


@dataclasses.dataclass(frozen=True)
class Trial:
    """One candidate composed with the accepted ones, checked against the guard and timed."""

    pipeline: Pipeline
    choices: tuple[Choice, ...]
    setup_seconds: float
    fidelity: Any  # accel.optimizing.search.fidelity.Fidelity
    failure: str | None  # why the guard failed it
    comparison: Comparison  # against the current best
    fresh_notes: dict[str, Any]
    memory_ratio: float | None
    cut: bool = False  # its comparison ran out of its budget slot before the usual rounds


def failure_message(exc: Exception, limit: int = 160) -> str:
    """An exception in one line: an AccelError's own message, else its type and first line."""
    if isinstance(exc, AccelError):
        return exc.message
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0][:limit] if text else ''}"


def said_beside(trial: Trial, left_out: list[str]) -> str:
    """What a trial's reason adds to its decision: where it was timed, that its slot ran out, what
    the composition left out."""
    said = ""
    if trial.fresh_notes:
        faults = trial.fresh_notes["faults_per_call"]
        said += (
            f"; {trial.fresh_notes['timed_in']}, page faults per call {faults['before']:.0f} -> {faults['after']:.0f}"
        )
    if trial.cut:
        said += f"; cut at the end of its budget slot after {len(trial.comparison.candidate.samples)} rounds"
    return said + (f"; without {', '.join(left_out)}" if left_out else "")
