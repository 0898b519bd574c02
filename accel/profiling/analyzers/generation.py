"""generation: an autoregressive loop that recomputes its prefix at every step.

The generation pass (accel.profiling.generation) recorded every model call of the loop: its
seconds, the tokens it was fed, and how many of those the previous call had computed already (the
token prefix compared directly, keyword calls included, as transformers' generate() makes them).
Recomputed tokens are the evidence; their share of all tokens computed says how much work is
repeated. Where the model takes use_cache, the pass also ran the loop with the cache on: the
predicted saving is that measured gain. Otherwise it comes from the step times: a Theil-Sen line
through (tokens fed, seconds) says what a call fed one token costs, which is what a cached step
would cost, so the saving is the share of step time above it. Loops whose calls were fed no token
ids (say, embeddings) are judged by a line through (position, seconds) alone: flat with a KV
cache, rising when each step recomputes the prefix. Bytes read per step (weights)
against peak bandwidth give the batch headroom: a step that is far from the bandwidth limit, or
that reads its weights once for the whole batch, runs more sequences at nearly the same cost.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

from accel.core.machine import Machine
from accel.profiling.analyzers import Role, register
from accel.profiling.data import GenerationProfile, ProfileData, model_time_share
from accel.profiling.report import Finding

MIN_STEPS = 4
# The slope counts as rising when the line climbs this much over the loop against its start:
# cached steps vary by a few percent with the position, a recomputed prefix by several times.
MIN_RISE = 0.5
# Keeping past keys and values removes the recomputed prefix; more sequences per step ride along on
# the same weight reads.
KV_CACHE = "generation.kv_cache"
BATCH = "batch.size"
# The loop itself in a graph runtime: the decode step exported with its cache, looped outside torch.
ONNX_GENERATE = "onnx.generate"
# ... with the step's weights in 4 or 8 bits, when they do not fit in cache.
ONNX_GENERATE_WEIGHT_ONLY = "onnx.generate_weight_only"


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Theil-Sen intercept and slope: the median of pairwise slopes, so a few steps slowed by other
    load on the machine do not tilt the line (a least-squares fit follows them)."""
    slopes = [
        (ys[j] - ys[i]) / (xs[j] - xs[i]) for i in range(len(xs)) for j in range(i + 1, len(xs)) if xs[j] != xs[i]
    ]
    slope = statistics.median(slopes) if slopes else 0.0
    intercept = statistics.median(y - slope * x for x, y in zip(xs, ys))
    return intercept, slope


@dataclasses.dataclass(frozen=True)
class StepFit:
    """The loop's step times read against position (and tokens fed, where the calls showed them)."""

    intercept: float
    slope: float
    first: float  # the first and last positions
    last: float
    tokens_seen: bool  # the calls were fed token ids, so recomputed tokens were counted
    recomputes: bool
    cached_step: float  # what a step fed one token costs
    recompute_share: float  # the share of step time above a cached step

    @property
    def start(self) -> float:
        return self.intercept + self.slope * self.first

    @property
    def end(self) -> float:
        return self.intercept + self.slope * self.last

    @property
    def rise(self) -> float:
        return self.slope * (self.last - self.first) / self.start if self.start > 0 else 0.0

    @property
    def rises(self) -> bool:
        return self.rise >= MIN_RISE


def fit_steps(generation: GenerationProfile) -> StepFit:
    steps = generation.steps
    positions = [float(s.position) for s in steps]
    seconds = [s.seconds for s in steps]
    intercept, slope = fit_line(positions, seconds)
    first, last = min(positions), max(positions)
    start = intercept + slope * first
    rise = slope * (last - first) / start if start > 0 else 0.0
    cached_step = max(intercept + slope, 0.0)
    tokens_seen = generation.computed_tokens > 0
    recomputes = generation.recomputed_tokens > 0 if tokens_seen else rise >= MIN_RISE
    if tokens_seen and recomputes:
        # The calls' own evidence: seconds against tokens fed; a cached step is fed one token.
        token_intercept, token_slope = fit_line([float(s.tokens) for s in steps], seconds)
        cached_step = max(token_intercept + token_slope, 0.0)
    recompute = sum(max(s - cached_step, 0.0) for s in seconds) if recomputes else 0.0
    step_total = sum(seconds)
    return StepFit(
        intercept=intercept,
        slope=slope,
        first=first,
        last=last,
        tokens_seen=tokens_seen,
        recomputes=recomputes,
        cached_step=cached_step,
        recompute_share=recompute / step_total if step_total > 0 else 0.0,
    )


@register(
    "generation",
    Role.CAUSE,
    reads=("generation", "end_to_end", "stages"),
    recommends=(KV_CACHE, BATCH, ONNX_GENERATE, ONNX_GENERATE_WEIGHT_ONLY),
)
def analyze(data: ProfileData, machine: Machine) -> list[Finding]:
    generation = data.generation
    if not isinstance(generation, GenerationProfile) or len(generation.steps) < MIN_STEPS:
        return []
    fit = fit_steps(generation)
    model_share = model_time_share(data) if data.end_to_end is not None else 1.0
    evidence = _evidence(generation, machine, fit)
    gain = generation.cache_gain if fit.recomputes else None
    saving = gain if gain is not None else fit.recompute_share
    evidence["predicted_saving"] = {KV_CACHE: model_share * saving} if fit.recomputes else {}
    # The cure first: where the loop recomputes, turning the cache on (generation.kv_cache says why
    # not when the model takes no cache); then more sequences per step.
    recommendations = [KV_CACHE, BATCH] if fit.recomputes else [BATCH]
    impact = model_share * saving if fit.recomputes else 0.0
    # The share is the model time spent recomputing the prefix, the time this finding explains.
    return [
        Finding.from_impact(
            "generation",
            share=model_share * (max(fit.recompute_share, gain or 0.0) if fit.recomputes else 0.0),
            impact=impact,
            summary=_summary(generation, fit, gain, model_share),
            evidence=evidence,
            recommendations=recommendations,
        )
    ]


def _evidence(generation: GenerationProfile, machine: Machine, fit: StepFit) -> dict[str, Any]:
    seconds = [s.seconds for s in generation.steps]
    median_step = sorted(seconds)[len(seconds) // 2]
    achieved_gbs = generation.parameter_bytes / median_step / 1e9 if median_step > 0 else 0.0
    bandwidth_fraction = achieved_gbs / machine.peak_bandwidth_gbs if machine.peak_bandwidth_gbs else None
    return {
        "tokens_per_s": generation.tokens_per_s,
        "steps": len(seconds),
        "first_step_seconds": seconds[0],
        "last_step_seconds": seconds[-1],
        # on the fitted line, which steps slowed by other load do not move
        "fitted_first_step_seconds": fit.start,
        "fitted_last_step_seconds": fit.end,
        "slope_seconds_per_position": fit.slope,
        "rise_over_loop": fit.rise,
        "recompute_share": fit.recompute_share,
        "cached_step_seconds": fit.cached_step,
        "computed_tokens": generation.computed_tokens,
        "recomputed_tokens": generation.recomputed_tokens,
        "recomputed_token_share": generation.recomputed_share,
        "cache_gain_measured": generation.cache_gain,
        "cached_total_seconds": generation.cached_total_seconds,
        "total_seconds": generation.total_seconds,
        "cached_tokens_per_s": (
            len(generation.cached_steps) * generation.batch_size / generation.cached_total_seconds
            if generation.cached_total_seconds
            else None
        ),
        "cache_outputs_equal": generation.cache_outputs_equal,
        "cache_note": generation.cache_note,
        "weight_bytes_per_step": generation.parameter_bytes,
        "achieved_gbs": achieved_gbs,
        "peak_bandwidth_gbs": machine.peak_bandwidth_gbs,
        "bandwidth_fraction": bandwidth_fraction,
        "batch_size": generation.batch_size,
        # Weights are read once per step whatever the batch: until the step reaches the bandwidth
        # or compute limit, more sequences ride along on the same weight reads.
        "batch_headroom": (1.0 / bandwidth_fraction) if bandwidth_fraction else None,
    }


def _summary(generation: GenerationProfile, fit: StepFit, gain: float | None, model_share: float) -> str:
    summary = f"generation: {generation.tokens_per_s:.1f} tokens/s over {len(generation.steps)} steps"
    if fit.tokens_seen and fit.recomputes:
        summary += (
            f"; each call recomputes the prefix: {generation.recomputed_tokens} of the "
            f"{generation.computed_tokens} token positions computed ({generation.recomputed_share:.0%}) "
            "were computed by the call before"
        )
    elif fit.tokens_seen:
        summary += "; no call recomputes tokens an earlier call computed (each starts where the last one ended)"
    summary += (
        f"; step latency {_trend(fit)} from {fit.start * 1e3:.2f} ms to "
        f"{fit.end * 1e3:.2f} ms ({fit.slope * 1e6:.1f} us per position)"
    )
    if gain is not None and generation.cached_total_seconds is not None:
        same = {True: ", same tokens out", False: ", different tokens out", None: ""}[generation.cache_outputs_equal]
        summary += (
            f"; with use_cache=True the loop took {generation.cached_total_seconds * 1e3:.0f} ms against "
            f"{generation.total_seconds * 1e3:.0f} ms (measured{same}): the KV cache saves {gain:.0%} of the loop, "
            f"{model_share * gain:.0%} of end-to-end time"
        )
    elif fit.recomputes:
        summary += (
            f": {fit.recompute_share:.0%} of step time is above a cached step, which a KV cache would save "
            "(keep past keys and values and feed one new token per step)"
        )
    return summary


# Below this measured change from the first position to the last, step latency is said to stay flat.
FLAT_CHANGE = 0.1


def _trend(fit: StepFit) -> str:
    """The measured change in words: the sentence follows the numbers beside it, not the fit's flag."""
    change = fit.end / fit.start - 1.0 if fit.start > 0 else 0.0
    if abs(change) < FLAT_CHANGE:
        return "stays flat"
    return f"{'rises' if change > 0 else 'falls'} {abs(change):.0%}"
