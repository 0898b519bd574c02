"""The pipeline for a set of chosen optimizations, composed from the baseline in slot order.

Candidates in one slot are alternatives (every way of replacing the model is one slot), so the
engine's trial replaces that slot's current choice; a composition applies the slots in SLOT_ORDER.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from accel.core.pipeline import Pipeline
from accel.optimizing.optimizers import SLOT_ORDER, Context, Optimizer
from accel.optimizing.recipes.schema import Candidate

# slot -> (optimizer, its config, the recipe candidate it came from)
Chosen = dict[str, tuple[Optimizer, Any, Candidate]]


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


# How a step begins whose optimizer applies to the baseline but not on top of the chosen optimizations.
IN_THE_COMPOSITION = "not applicable in the composition:"


def slot_rank(slot: str) -> tuple[int, str]:
    return (SLOT_ORDER.index(slot), "") if slot in SLOT_ORDER else (len(SLOT_ORDER), slot)


def names(choices: tuple[Choice, ...]) -> str:
    return ", ".join(c.optimizer for c in choices)


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

    def build(self, chosen: Chosen) -> tuple[Pipeline, tuple[Choice, ...], float]:
        ordered = sorted(chosen.items(), key=lambda item: slot_rank(item[0]))
        key: tuple = ()
        pipeline = self.baseline
        choices: tuple[Choice, ...] = ()
        setup = 0.0
        for slot, (optimizer, config, candidate) in ordered:
            key = key + ((slot, optimizer.name, repr(config)),)
            if key not in self._cache:
                # (A process-wide setting, timed in fresh processes, holds whatever the model is. A
                # setting of what the model slot keeps is checked first too: with another model
                # candidate on trial, the composition of the other slots leaves it the baseline's.)
                recheck = (choices or optimizer.tunes_kept) and not optimizer.process_wide
                why_not = optimizer.applicable(pipeline, self.context) if recheck else None
                if why_not:
                    once = f" once {names(choices)} is applied" if choices else ""
                    self._left_out[key] = f"{optimizer.name} ({why_not}{once})"
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

    def left_out(self, chosen: Chosen) -> list[str]:
        """Why each choice of `chosen` that build() left out of the composition is not in it."""
        ordered = sorted(chosen.items(), key=lambda item: slot_rank(item[0]))
        keys = [tuple((s, o.name, repr(c)) for s, (o, c, _) in ordered[: i + 1]) for i in range(len(ordered))]
        return [self._left_out[k] for k in keys if k in self._left_out]

    def why_not(self, optimizer: Optimizer, others: Chosen) -> str | None:
        """Why `optimizer` is not tried on top of `others` (the chosen optimizations of the other
        slots), or None. A reason only the composition gives (the optimizer applies to the baseline
        alone) says so and names what it is composed with, so the user is not told the pipeline
        itself lacks what an earlier choice took away."""
        pipeline, choices, _ = self.build(others)
        reason = optimizer.applicable(pipeline, self.context)
        if reason is None or not choices or optimizer.applicable(self.baseline, self.context) is not None:
            return reason
        return f"{IN_THE_COMPOSITION} {reason} once {names(choices)} is applied"
