"""One trial of `accel optimize SCRIPT`: the script run once under one DataLoader setting.

The script runs as `__main__` (accel.profiling.script.run_script) with the setting applied to
every DataLoader it builds (accel.optimizing.script_loader), its loop ended by BudgetReached after
TRIAL_BATCHES batches or `loop_seconds` (counted from the first batch request: the script's
set-up is not cut short). Each batch's period is measured at the loader (the wait in `__next__`
plus the step until the next request). The steady state leaves out the first batch of every pass;
the one-time costs of a pass (its first period, with the worker start-up in it, and its last
request, which shuts the workers down) are kept apart, so a pass can be costed whole. The first
DIGEST_BATCHES batches of each pass are digested (core.hashing) to compare settings' batches; the
global RNGs are seeded first, so a seeded script yields the same batches run after run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import io
import random
from typing import Any

import numpy as np
import torch

from accel.core.hashing import content_digest
from accel.core.loading import Script
from accel.core.measure import now
from accel.core.watchdog import children_reaped
from accel.optimizing.optimizers.loader_tune import Setting
from accel.optimizing.script_loader import CreatedLoader, loader_settings
from accel.profiling.script import BudgetReached, LoaderCall, run_script, timed_loader_iteration

# Batches a trial runs before its loop is ended: past the first pass's start-up, enough periods
# for a median.
TRIAL_BATCHES = 40
# Batches digested per pass over a loader, and passes digested per run: enough to see a
# different sample order or different samples, cheap next to the batches themselves.
DIGEST_BATCHES = 3
DIGEST_PASSES = 4
# A run needs this many steady-state batches to give a rate.
MIN_STEADY_BATCHES = 2


@dataclasses.dataclass(frozen=True)
class Trial:
    """One run of the script under one setting."""

    seconds_per_sample: float | None  # steady state; None when too few batches were seen
    samples: int
    startup_seconds: float  # worker start-up, summed over the passes
    passes: int
    digests: dict[str, str]  # "pass 1, batch 2" -> digest ("" when the batch cannot be digested)
    loaders: tuple[CreatedLoader, ...]
    run_seconds: float
    setup_seconds: float = 0.0  # from the start of the run to its first batch request
    batch_seconds: float = 0.0  # the steady state's mean period of one batch
    first_batch_seconds: float = 0.0  # a pass's first period (worker start-up in it), median over passes
    end_seconds: float = 0.0  # a pass's last request, which shuts its workers down; median over passes
    first_pass_batches: int = 0  # batches the first pass yielded (all of it, or up to the budget)

    def pass_seconds_per_sample(self, batches: int) -> float | None:
        """Seconds per sample over a pass of `batches` batches, its one-time costs included: the first
        period, the steady periods, the end. What a training loop sees, not only its steady state."""
        if self.seconds_per_sample is None:
            return None
        if batches < 2:
            return self.seconds_per_sample
        samples_per_batch = self.batch_seconds / self.seconds_per_sample
        seconds = self.first_batch_seconds + (batches - 1) * self.batch_seconds + self.end_seconds
        return seconds / (batches * samples_per_batch)


def steady_state(
    calls: list[LoaderCall], overhead: dict[int, float], stopped_seconds: float | None = None
) -> tuple[float, int, int]:
    """(seconds, samples, batches) of the batches past the first of each pass: each batch's period
    runs from its request to the next request (the one the budget stopped at `stopped_seconds`, if
    any), less the digesting accel did in between."""
    starts = [c.start_seconds for c in calls[1:]] + ([stopped_seconds] if stopped_seconds is not None else [])
    seconds, samples, batches = 0.0, 0, 0
    for i, (call, following) in enumerate(zip(calls, starts)):
        if call.exhausted or not call.samples or call.first_of_iterator:
            continue
        seconds += following - call.start_seconds - overhead.get(i, 0.0)
        samples += call.samples
        batches += 1
    return seconds, samples, batches


def pass_edges(
    calls: list[LoaderCall], overhead: dict[int, float], stopped_seconds: float | None = None
) -> tuple[list[float], list[float], int]:
    """Each pass's first period and the duration of its last (exhausted) request, and the batches
    in the first pass."""
    starts = [c.start_seconds for c in calls[1:]] + ([stopped_seconds] if stopped_seconds is not None else [])
    firsts = [
        following - call.start_seconds - overhead.get(i, 0.0)
        for i, (call, following) in enumerate(zip(calls, starts))
        if call.first_of_iterator and call.samples
    ]
    ends = [call.seconds for call in calls if call.exhausted]
    first_end = next((i for i, call in enumerate(calls) if call.exhausted), len(calls))
    return firsts, ends, sum(1 for call in calls[:first_end] if call.samples)


def run_trial(script: Script, setting: Setting | None, *, loop_seconds: float | None = None) -> Trial:
    """Run the script once with `setting` (None: as written), its loop ended by the budget."""
    calls: list[LoaderCall] = []
    created: list[CreatedLoader] = []
    digests: dict[str, str] = {}
    overhead: dict[int, float] = {}
    passes: list[int] = []

    def digest(iterator: Any, batch: Any) -> None:
        index = iterator._num_yielded
        if index == 1:  # a new pass (persistent workers reuse one iterator for every pass)
            passes.append(len(passes) + 1)
            iterator._accel_pass = passes[-1]
        if iterator._accel_pass <= DIGEST_PASSES and index <= DIGEST_BATCHES:
            began = now()
            digests[f"pass {iterator._accel_pass}, batch {index}"] = content_digest(batch) or ""
            overhead[len(calls) - 1] = now() - began

    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    began = now()
    stopped = None
    with children_reaped():  # the processes the script started and left running end with the trial
        try:
            # The script's own output, once per trial, would bury the search's: it is not kept.
            with (
                contextlib.redirect_stdout(io.StringIO()),
                loader_settings(setting, created),
                timed_loader_iteration(calls, max_batches=TRIAL_BATCHES, loop_seconds=loop_seconds, on_batch=digest),
            ):
                run_script(script)
        except BudgetReached:
            stopped = now()
        finally:
            gc.collect()  # the ended loop's iterators, and with them their worker processes
    seconds, samples, batches = steady_state(calls, overhead, stopped)
    firsts, ends, first_pass = pass_edges(calls, overhead, stopped)
    return Trial(
        seconds_per_sample=seconds / samples if batches >= MIN_STEADY_BATCHES else None,
        samples=sum(c.samples for c in calls),
        startup_seconds=sum(c.seconds for c in calls if c.is_startup),
        passes=len(passes),
        digests=digests,
        loaders=tuple(created),
        run_seconds=now() - began,
        setup_seconds=(calls[0].start_seconds - began) if calls else now() - began,
        batch_seconds=seconds / max(batches, 1),
        first_batch_seconds=float(np.median(firsts)) if firsts else 0.0,
        end_seconds=float(np.median(ends)) if ends else 0.0,
        first_pass_batches=first_pass,
    )


def batches_differ(reference: Trial, trial: Trial) -> str | None:
    """Why the trial's batches are not the reference's, or None when every batch both saw matches."""
    for key, value in trial.digests.items():
        if key in reference.digests and (not value or value != reference.digests[key]):
            return f"{key} could not be digested" if not value else f"{key} differs"
    return None
