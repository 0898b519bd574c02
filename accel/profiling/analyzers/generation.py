"""generation: an autoregressive loop whose per-step latency grows with the position.

The generation pass timed every model call inside one generate loop with the sequence length it
saw. A Theil-Sen line through (position, seconds) gives the slope: with a KV cache a step
costs about the same at every position; a clearly rising slope means each step recomputes the
whole prefix. Caching would make every step cost about what a step at position 1 costs on that
line, so the predicted saving is the share of step time above it. Bytes read per step (weights)
against peak bandwidth give the batch headroom: a step that is far from the bandwidth limit, or
that reads its weights once for the whole batch, runs more sequences at nearly the same cost.
"""

from __future__ import annotations

import statistics

from accel.core.machine import Machine
from accel.profiling.analyzers import ANALYZERS
from accel.profiling.data import GenerationProfile, ProfileData, model_time_share
from accel.profiling.report import Finding

MIN_STEPS = 4
# The slope counts as rising when the line climbs this much over the loop against its start:
# cached steps vary by a few percent with the position, a recomputed prefix by several times.
MIN_RISE = 0.5


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Theil-Sen intercept and slope: the median of pairwise slopes, so a few steps slowed by other
    load on the machine do not tilt the line (a least-squares fit follows them)."""
    slopes = [
        (ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(len(xs)) for j in range(i + 1, len(xs)) if xs[j] != xs[i]
    ]
    slope = statistics.median(slopes) if slopes else 0.0
    intercept = statistics.median(y - slope * x for x, y in zip(xs, ys))
    return intercept, slope


@ANALYZERS.register("generation")
def analyze(data: ProfileData, machine: Machine) -> list[Finding]:
    generation = data.generation
    if not isinstance(generation, GenerationProfile) or len(generation.steps) < MIN_STEPS:
        return []
    steps = generation.steps
    positions = [float(s.position) for s in steps]
    seconds = [s.seconds for s in steps]
    intercept, slope = fit_line(positions, seconds)
    first, last = min(positions), max(positions)
    start = intercept + slope * first
    rise = slope * (last - first) / start if start > 0 else 0.0
    step_total = sum(seconds)
    cached_step = max(intercept + slope, 0.0)
    recompute = sum(max(s - cached_step, 0.0) for s in seconds) if rise >= MIN_RISE else 0.0
    recompute_share = recompute / step_total if step_total > 0 else 0.0
    model_share = model_time_share(data) if data.end_to_end is not None else 1.0
    median_step = sorted(seconds)[len(seconds) // 2]
    achieved_gbs = generation.parameter_bytes / median_step / 1e9 if median_step > 0 else 0.0
    bandwidth_fraction = achieved_gbs / machine.peak_bandwidth_gbs if machine.peak_bandwidth_gbs else None
    evidence = {
        "tokens_per_s": generation.tokens_per_s,
        "steps": len(steps),
        "first_step_seconds": seconds[0],
        "last_step_seconds": seconds[-1],
        # on the fitted line, which steps slowed by other load do not move
        "fitted_first_step_seconds": start,
        "fitted_last_step_seconds": intercept + slope * last,
        "slope_seconds_per_position": slope,
        "rise_over_loop": rise,
        "recompute_share": recompute_share,
        "weight_bytes_per_step": generation.parameter_bytes,
        "achieved_gbs": achieved_gbs,
        "peak_bandwidth_gbs": machine.peak_bandwidth_gbs,
        "bandwidth_fraction": bandwidth_fraction,
        "batch_size": generation.batch_size,
        # Weights are read once per step whatever the batch: until the step reaches the bandwidth
        # or compute limit, more sequences ride along on the same weight reads.
        "batch_headroom": (1.0 / bandwidth_fraction) if bandwidth_fraction else None,
    }
    summary = (
        f"generation: {generation.tokens_per_s:.1f} tokens/s over {len(steps)} steps; step latency "
        f"{'rises' if rise >= MIN_RISE else 'stays flat'} from {start * 1e3:.2f} ms to "
        f"{(intercept + slope * last) * 1e3:.2f} ms ({slope * 1e6:.1f} us per position)"
    )
    recommendations = []
    if rise >= MIN_RISE:
        summary += (
            f": each step recomputes the prefix, {recompute_share:.0%} of step time that a KV cache "
            f"would save (keep past keys and values and feed one new token per step)"
        )
    recommendations.append("batch.size")
    impact = model_share * recompute_share
    # The share is the model time spent recomputing the prefix, the time this finding explains.
    return [
        Finding.from_impact(
            "generation",
            share=model_share * recompute_share,
            impact=impact,
            summary=summary,
            evidence=evidence,
            recommendations=recommendations,
        )
    ]
