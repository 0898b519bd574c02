"""straggler: the rank the others wait for at collectives, and why it is late.

Under DDP the gradient all-reduce makes every rank wait for the slowest, so wall time evens out and
the slow rank looks like the others; the evidence is who arrives last. Over the job's collectives
(matched across ranks, accel.profiling.ranks.matched_calls) the straggler is the rank that arrives
last most often. What another rank loses waiting for it is the time it is blocked at collectives
beyond the straggler's own blocked time (which is the transfer itself: the straggler, arriving
last, waits for no one), per analyzed step.

The cause comes from the straggler's own breakdown against the others', over the analyzed steps:
(trimmed means over steps) its extra data wait explains the lost time (data_loading: its DataLoader is slower) or its extra
compute does (compute_bound: it does more work per step, or the same work slower). A cause is named
only when it explains at least CAUSE_MIN_SHARE of the others' lost time; otherwise "unattributed".

Share and impact: the others' lost time over their loop time, which the job would get back if the
straggler kept up.
"""

from __future__ import annotations

import statistics

from accel.core.machine import Machine
from accel.profiling.analyzers import ANALYZERS, Role, register
from accel.profiling.data import ProfileData
from accel.profiling.ranks import JobTimeline, StepBreakdown, matched_calls, rank_profile_data
from accel.profiling.report import Finding

# TraceLens and NVIDIA's straggler detection abstain when no cause explains most of the wait;
# 80% leaves room for noise in the others' breakdown while keeping a named cause honest.
CAUSE_MIN_SHARE = 0.8
UNATTRIBUTED = "unattributed"
# Per-step gaps between ranks are averaged with this share of steps cut at each end.
TRIM_SHARE = 0.1
# The part of a rank's step each cause is read from.
CAUSE_FIELDS = {"data_loading": "data_wait_seconds", "compute_bound": "compute_seconds"}
# What the cause's own finding would recommend when the rank's data says nothing more specific.
CAUSE_CURES = {
    "data_loading": ["loader.tune", "cache.decoded"],
    "compute_bound": ["precision.bf16", "compile"],
    UNATTRIBUTED: [],
}
CAUSE_ADVICE = {
    "data_loading": "give its DataLoader more workers or cheaper samples (its shard, storage or decode is slower)",
    "compute_bound": (
        "give it the same work as the others (batch size, sequence lengths, rank-only work such as "
        "logging or evaluation), or make its compute faster"
    ),
    UNATTRIBUTED: "neither its data wait nor its compute explains the lag; look at its trace around the collectives",
}


@register("straggler", Role.OTHER, reads=("extra",), recommends=tuple(dict.fromkeys(sum(CAUSE_CURES.values(), []))))
def analyze(data: ProfileData, machine: Machine) -> list[Finding]:
    job = data.extra.get("multirank")
    if not isinstance(job, JobTimeline) or job.world_size < 2:
        return []
    groups = [g for g in matched_calls(job) if _analyzed(job, g)]
    if not groups:
        return []
    last_count = _arrived_last(job, groups)
    steps = {t.rank: [t.breakdown()[i] for i in t.analyzed_steps()] for t in job.ranks}
    per_step = {r: _per_step(parts) for r, parts in steps.items()}

    def waited_for(waiter: int, rank: int) -> float:
        """Seconds per step `waiter` was blocked beyond `rank`'s own blocked time (the transfer)."""
        return max(_typical_gap(steps, waiter, rank, "collective_seconds"), 0.0)

    straggler = max(last_count, key=lambda r: (last_count[r], sum(waited_for(w, r) for w in steps)))
    others = [r for r in steps if r != straggler]
    lost_per_step = _mean(waited_for(r, straggler) for r in others)
    others_step_seconds = _mean(per_step[r]["seconds"] for r in others)
    share = _share(lost_per_step, others_step_seconds)
    cause, cause_shares = _cause(steps, straggler, others, lost_per_step)
    recommendations = _recommendations(job, straggler, cause, data.cores, machine)
    arrived_last_share = last_count[straggler] / len(groups)
    wait_share_by_rank = {str(r): _share(waited_for(r, straggler), per_step[r]["seconds"]) for r in per_step}
    typical = {field: _mean(per_step[r][field] for r in others) for field in per_step[straggler]}
    summary = (
        f"rank {straggler} arrives last at {arrived_last_share:.0%} of {len(groups)} collectives; "
        f"the other ranks lose {share:.0%} of their time waiting for it"
    )
    summary += _cause_text(cause, cause_shares, per_step[straggler], typical)
    evidence = {
        "rank": straggler,
        "cause": cause,
        "arrived_last_share": arrived_last_share,
        "wait_share_by_rank": wait_share_by_rank,
        "arrived_last_by_rank": {str(r): c / len(groups) for r, c in last_count.items()},
        "cause_shares": cause_shares,
        "cause_min_share": CAUSE_MIN_SHARE,
        "lost_seconds_per_step": lost_per_step,
        "collectives_matched": len(groups),
        "straggler_per_step": per_step[straggler],
        "others_per_step": typical,
        "source": job.source,
    }
    return [
        Finding.from_impact(
            "straggler", share=share, impact=share, summary=summary, evidence=evidence, recommendations=recommendations
        )
    ]


def _arrived_last(job: JobTimeline, groups: list[dict]) -> dict[int, int]:
    """Per rank, how many of the matched collectives it arrived at last."""
    last_count = dict.fromkeys(range(job.world_size), 0)
    for group in groups:
        last_count[max(group, key=lambda r: group[r][0].arrival_seconds)] += 1
    return last_count


def _share(seconds: float, of_seconds: float) -> float:
    return seconds / of_seconds if of_seconds > 0 else 0.0


def _cause_text(cause: str, cause_shares: dict[str, float], own: dict[str, float], typical: dict[str, float]) -> str:
    """The summary's part on the cause: the straggler's own step part against the others', or why none is named."""
    if cause == UNATTRIBUTED:
        text = (
            f"; no single cause explains {CAUSE_MIN_SHARE:.0%} of the wait "
            f"(data wait {cause_shares['data_loading']:.0%}, compute {cause_shares['compute_bound']:.0%}): unattributed"
        )
    else:
        field = CAUSE_FIELDS[cause]
        text = (
            f"; cause {cause}: its {field.removesuffix('_seconds').replace('_', ' ')} is "
            f"{own[field] * 1e3:.1f} ms per step against {typical[field] * 1e3:.1f} ms on the "
            f"others, {cause_shares[cause]:.0%} of the wait"
        )
    return text + f"; {CAUSE_ADVICE[cause]}"


def _per_step(parts: list[StepBreakdown]) -> dict[str, float]:
    """A rank's typical step: the median of each part over the analyzed steps."""

    def median(field: str) -> float:
        return statistics.median(getattr(p, field) for p in parts) if parts else 0.0

    return {field: median(field) for field in ("seconds", "data_wait_seconds", "compute_seconds", "collective_seconds")}


def _typical_gap(steps: dict[int, list[StepBreakdown]], a: int, b: int, field: str) -> float:
    """Rank a's part minus rank b's, per step (paired by index), as a trimmed mean.

    A mean, so that balanced ranks that take turns arriving last cancel out (a median would pick
    one side); trimmed, so that a rank descheduled for a few steps on a busy machine does not pass
    for a straggler.
    """
    gaps = sorted(getattr(x, field) - getattr(y, field) for x, y in zip(steps[a], steps[b]))
    cut = int(len(gaps) * TRIM_SHARE)
    kept = gaps[cut : len(gaps) - cut] or gaps
    return sum(kept) / len(kept) if kept else 0.0


def _analyzed(job: JobTimeline, group: dict) -> bool:
    """A collective counts when it falls in an analyzed step of every rank."""
    for rank, (call, _) in group.items():
        timeline = job.rank(rank)
        index = timeline.step_index(call.arrival_seconds)
        if index is None or index not in timeline.analyzed_steps():
            return False
    return True


def _mean(values) -> float:
    items = list(values)
    return sum(items) / len(items) if items else 0.0


def _cause(
    steps: dict[int, list[StepBreakdown]], straggler: int, others: list[int], lost_per_step: float
) -> tuple[str, dict[str, float]]:
    """The part of the others' lost time per step that the straggler's extra data wait, and its
    extra compute, explain. The ranks run in lockstep, so what the straggler spends beyond the
    others before a collective is what they wait there."""
    shares = dict.fromkeys(CAUSE_FIELDS, 0.0)
    if lost_per_step > 0:
        for cause, field in CAUSE_FIELDS.items():
            extra = _mean(_typical_gap(steps, straggler, r, field) for r in others)
            shares[cause] = min(max(extra / lost_per_step, 0.0), 1.0)
    best = max(shares, key=lambda k: shares[k])
    return (best if shares[best] >= CAUSE_MIN_SHARE else UNATTRIBUTED), shares


def _recommendations(job: JobTimeline, straggler: int, cause: str, cores: int, machine: Machine) -> list[str]:
    """The cause's own cures: for data, what the data_loading analyzer says about that rank's loop."""
    if cause == "data_loading":
        own = ANALYZERS.get("data_loading")(rank_profile_data(job.rank(straggler), cores), machine)
        named = [name for finding in own for name in finding.recommendations]
        if named:
            return named
    return list(CAUSE_CURES[cause])
