"""How the optimize engine measures: the call a recipe's target times, and one A/B comparison.

accel.optimizing.search.engine searches the candidates and decides; accel.optimizing.search.verify
re-checks a lock; both time pipelines through what is here, so a verified speed-up is measured the
way the engine measured it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from accel.core.measure import Comparison, Measurement, compare_interleaved, device_sync, now
from accel.core.pipeline import Pipeline, batch_length
from accel.optimizing.search.validation import baseline_errors, reset_pipeline_state

# Seconds of sleep before each side's untimed settle call: spinning thread pools go idle first.
SETTLE_SECONDS = 0.002


class Measurer:
    """How a recipe's target is measured: the call that is timed, and what one call covers."""

    def __init__(self, baseline: Pipeline, target: str, sync: Callable[[], None] | None = None) -> None:
        self.target = target if (target != "throughput" or baseline.has_source) else "latency"
        self.sync = sync or device_sync(None)  # CUDA kernels run asynchronously: wait for them
        self.batch = baseline.example_batch()
        self.samples_per_call = _samples_per_pass(baseline) if self.target == "throughput" else batch_length(self.batch)

    def call(self, pipeline: Pipeline) -> Callable[[], Any]:
        if self.target == "throughput":

            def one_pass() -> Any:
                reset_pipeline_state(pipeline)
                return pipeline.run()

            return one_pass
        batch = self.batch

        def forward() -> Any:
            with torch.inference_mode():
                return pipeline.forward(batch)

        return forward

    def summary(self, seconds: float, peak_bytes: int | None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "median_seconds": seconds,
            "samples_per_call": self.samples_per_call,
            "samples_per_s": self.samples_per_call / seconds if seconds > 0 else None,
        }
        if peak_bytes is not None:
            data["peak_bytes"] = peak_bytes
        return data


def _samples_per_pass(baseline: Pipeline) -> int:
    """The samples one pass over the source gives (a pass that raises is the pipeline's own error)."""
    with baseline_errors():
        return len(baseline.run())


def compare_pipelines(
    measurer: Measurer,
    best: Pipeline,
    trial: Pipeline,
    budget_seconds: float,
    deadline: float | None = None,
    threshold: float | None = None,
) -> Comparison:
    """`best` against `trial`, interleaved, for about `budget_seconds` of rounds; past `deadline`
    (a core.measure.now() time) cut at the next round's end, however few rounds that leaves.
    `threshold`: the speed-up a keep decision needs; the rounds stop (after the fewest a
    comparison takes) once the interval lies wholly above or below it: a 4x graph-runtime loop
    against eager generate() was otherwise timed for its whole slot (25 s) to narrow an interval
    that had decided at 7 rounds."""
    decided = None if threshold is None else (lambda ci: ci[0] > threshold or ci[1] < threshold)
    # A throughput pass is long next to a spinning pool's idle-out: a pause is enough, no settle pass.
    settle_calls = 0 if measurer.target == "throughput" else 1
    return compare_interleaved(
        measurer.call(best),
        measurer.call(trial),
        warmup=2,
        settle_calls=settle_calls,
        settle_seconds=SETTLE_SECONDS,
        min_rounds=min_rounds(measurer.target),
        budget_seconds=budget_seconds,
        sync=measurer.sync,
        deadline=deadline,
        decided=decided,
    )


def min_rounds(target: str) -> int:
    """The rounds a comparison takes at least, unless a deadline cuts it."""
    return 5 if target == "throughput" else 7


def amortized(comparison: Comparison, setup_seconds: float, passes: int) -> Comparison:
    """The comparison with one-time costs spread over `passes` passes: over P passes of baseline time
    T_b, a candidate at speedup s that paid S once runs at P*T_b / (P*T_b/s + S)."""
    per_pass = comparison.baseline.median
    if setup_seconds <= 0 or per_pass <= 0:
        return comparison

    def spread(speedup: float) -> float:
        return passes / (passes / speedup + setup_seconds / per_pass) if speedup > 0 else speedup

    low, high = comparison.speedup_ci
    return dataclasses.replace(comparison, speedup=spread(comparison.speedup), speedup_ci=(spread(low), spread(high)))


# Timed calls of the baseline before the search (after a warm-up): its per-call time, from which
# each trial's cost is predicted, the fastest of them counted. At least BASELINE_CALLS, more (up
# to MAX_BASELINE_CALLS) until BASELINE_SECONDS have passed: on a loaded machine most calls of a
# small model are stretched, and the fastest of many is the model's own time...
BASELINE_CALLS = 3
BASELINE_SECONDS = 0.3
MAX_BASELINE_CALLS = 30
# ...but once the calls have taken this long, fewer than BASELINE_CALLS do: a BERT-base call of
# 15 s on a busy machine made the baseline's timing a minute of a 300 s budget, to predict costs
# that one call predicts as well.
BASELINE_MAX_SECONDS = 2.0


def time_baseline(call: Callable[[], Any], measurer: "Measurer", *, warm: bool) -> Measurement:
    """The baseline's call timed a few times (one pass for a throughput target: a pass can take
    seconds, one is enough to predict from), after a warm-up call when `warm`."""
    if warm:
        call()
        measurer.sync()
    samples: list[float] = []
    began = now()
    while len(samples) < MAX_BASELINE_CALLS:
        started = now()
        call()
        measurer.sync()
        samples.append(now() - started)
        if measurer.target == "throughput":
            break
        if len(samples) >= BASELINE_CALLS and now() - began >= BASELINE_SECONDS:
            break
        if now() - began >= BASELINE_MAX_SECONDS:
            break
    return Measurement(tuple(samples), warmup_calls=int(warm))
