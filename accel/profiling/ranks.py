"""What a multi-rank job measured, per rank, as plain typed data: the straggler analyzer reads it.

Both sources fill the same model: the timing hooks accel runs inside each torchrun rank
(accel.profiling.multirank.rank) and per-rank Kineto traces from a cluster job
(accel.profiling.multirank.traces). All times are seconds on one clock shared by the ranks (aligned
at start, or from the collectives' completion times in traces).

- A step runs from one DataLoader batch request to the next; its data wait is the time inside the
  request.
- A collective call has an arrival (the rank asked for it: the call, the DDP bucket ready, the
  kernel start) and a done time (it completed on this rank).
- The time a rank is blocked at collectives: calls whose [arrival, done] intervals chain into each
  other form a cluster (DDP's buckets all in flight at the end of backward); the rank is blocked from
  the cluster's last arrival to its last done, and that time is booked on the last-arriving call.
  An async call followed by compute and a late wait counts that compute as blocked: the model sees
  when a collective was in flight, not when the rank waited on it.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import statistics
from typing import Any

from accel.profiling.data import EndToEnd, ProfileData, StageTiming

# DDP builds its buckets and the allocator warms up in the first step; it is left out of the
# analysis when there are more steps than this.
WARMUP_STEPS = 1


@dataclasses.dataclass(frozen=True)
class CollectiveCall:
    """One collective as one rank saw it."""

    name: str
    arrival_seconds: float
    done_seconds: float

    def __post_init__(self) -> None:
        if self.done_seconds < self.arrival_seconds:
            raise ValueError(
                f"collective {self.name}: done before arrival ({self.done_seconds} < {self.arrival_seconds})"
            )


@dataclasses.dataclass(frozen=True)
class RankStep:
    """One step of the training loop on one rank."""

    start_seconds: float
    end_seconds: float
    data_wait_seconds: float
    samples: int = 0

    def __post_init__(self) -> None:
        if self.end_seconds < self.start_seconds or self.data_wait_seconds < 0:
            raise ValueError(f"RankStep needs start <= end and a wait >= 0, got {self}")

    @property
    def seconds(self) -> float:
        return self.end_seconds - self.start_seconds


@dataclasses.dataclass(frozen=True)
class StepBreakdown:
    """A step split into data wait, blocked at collectives, and the rest (compute and host work)."""

    seconds: float
    data_wait_seconds: float
    collective_seconds: float

    @property
    def compute_seconds(self) -> float:
        return max(self.seconds - self.data_wait_seconds - self.collective_seconds, 0.0)


@dataclasses.dataclass(frozen=True)
class RankTimeline:
    rank: int
    steps: tuple[RankStep, ...]
    calls: tuple[CollectiveCall, ...]
    host: str = ""
    num_workers: int = 0

    def blocked_seconds(self) -> list[float]:
        """Per call (in order), the time this rank was blocked on it (see the module docstring)."""
        order = sorted(range(len(self.calls)), key=lambda i: self.calls[i].arrival_seconds)
        blocked = [0.0] * len(self.calls)
        cluster: list[int] = []
        cluster_done = float("-inf")
        for index in order + [-1]:
            call = self.calls[index] if index >= 0 else None
            if cluster and (call is None or call.arrival_seconds > cluster_done):
                last = cluster[-1]
                blocked[last] = max(cluster_done - self.calls[last].arrival_seconds, 0.0)
                cluster, cluster_done = [], float("-inf")
            if call is not None:
                cluster.append(index)
                cluster_done = max(cluster_done, call.done_seconds)
        return blocked

    @functools.cached_property
    def _step_starts(self) -> list[float]:
        return [s.start_seconds for s in self.steps]

    def step_index(self, seconds: float) -> int | None:
        """The step a moment falls in, or None outside the loop."""
        index = bisect.bisect_right(self._step_starts, seconds) - 1
        if index < 0 or seconds > self.steps[index].end_seconds:
            return None
        return index

    def breakdown(self) -> list[StepBreakdown]:
        collective = [0.0] * len(self.steps)
        for call, blocked in zip(self.calls, self.blocked_seconds()):
            index = self.step_index(call.arrival_seconds)
            if index is not None:
                collective[index] += blocked
        return [
            StepBreakdown(s.seconds, s.data_wait_seconds, min(c, max(s.seconds - s.data_wait_seconds, 0.0)))
            for s, c in zip(self.steps, collective)
        ]

    def analyzed_steps(self) -> range:
        """The steps the analysis uses: all but the warm-up ones when there are enough."""
        first = WARMUP_STEPS if len(self.steps) > WARMUP_STEPS else 0
        return range(first, len(self.steps))

    def summary(self) -> "RankSummary":
        parts = [self.breakdown()[i] for i in self.analyzed_steps()]
        seconds = sum(p.seconds for p in parts)
        return RankSummary(
            rank=self.rank,
            host=self.host,
            steps=len(parts),
            seconds=seconds,
            median_step_seconds=statistics.median(p.seconds for p in parts) if parts else 0.0,
            data_wait_seconds=sum(p.data_wait_seconds for p in parts),
            compute_seconds=sum(p.compute_seconds for p in parts),
            collective_seconds=sum(p.collective_seconds for p in parts),
            collectives=len(self.calls),
            samples=sum(self.steps[i].samples for i in self.analyzed_steps()),
        )


@dataclasses.dataclass(frozen=True)
class RankSummary:
    """One rank's loop, over the analyzed steps: the JSON report's `ranks` holds one per rank."""

    rank: int
    host: str
    steps: int
    seconds: float
    median_step_seconds: float
    data_wait_seconds: float
    compute_seconds: float
    collective_seconds: float
    collectives: int
    samples: int

    def to_dict(self) -> dict[str, Any]:
        share = (lambda part: part / self.seconds) if self.seconds > 0 else (lambda part: 0.0)
        return dataclasses.asdict(self) | {
            "data_wait_share": share(self.data_wait_seconds),
            "compute_share": share(self.compute_seconds),
            "collective_share": share(self.collective_seconds),
        }


@dataclasses.dataclass(frozen=True)
class JobTimeline:
    """Every rank of one job. `source` is "torchrun" (accel launched it) or "traces"."""

    ranks: tuple[RankTimeline, ...]
    source: str
    clock_alignment: str = ""

    def __post_init__(self) -> None:
        if sorted(r.rank for r in self.ranks) != list(range(len(self.ranks))):
            raise ValueError(f"ranks must be 0..N-1 once each, got {[r.rank for r in self.ranks]}")

    def rank(self, rank: int) -> RankTimeline:
        return next(r for r in self.ranks if r.rank == rank)

    @property
    def world_size(self) -> int:
        return len(self.ranks)


def matched_calls(job: JobTimeline) -> list[dict[int, tuple[CollectiveCall, float]]]:
    """The same collective on every rank, matched by name and occurrence: rank -> (call, blocked).

    Collectives must be issued in the same order on every rank of a group, so the k-th call of a
    name on one rank is the k-th on the others. Calls past the shortest rank's count are dropped.
    """
    per_rank: dict[int, dict[str, list[tuple[CollectiveCall, float]]]] = {}
    for timeline in job.ranks:
        by_name: dict[str, list[tuple[CollectiveCall, float]]] = {}
        for call, blocked in zip(timeline.calls, timeline.blocked_seconds()):
            by_name.setdefault(call.name, []).append((call, blocked))
        per_rank[timeline.rank] = by_name
    names = set.intersection(*(set(by_name) for by_name in per_rank.values())) if per_rank else set()
    matched: list[dict[int, tuple[CollectiveCall, float]]] = []
    for name in sorted(names):
        count = min(len(by_name[name]) for by_name in per_rank.values())
        matched.extend({rank: by_name[name][k] for rank, by_name in per_rank.items()} for k in range(count))
    return sorted(matched, key=lambda group: min(call.arrival_seconds for call, _ in group.values()))


def rank_profile_data(timeline: RankTimeline, cores: int) -> ProfileData:
    """One rank's own loop as script-mode ProfileData, for the single-process analyzers: its steps
    without the time it was blocked at collectives (the time it spent on the other ranks)."""
    parts = [timeline.breakdown()[i] for i in timeline.analyzed_steps()]
    data = ProfileData(target=f"rank{timeline.rank}", mode="script", cores=cores, num_workers=timeline.num_workers)
    if not parts:
        return data
    wait = sum(p.data_wait_seconds for p in parts)
    compute = sum(p.compute_seconds for p in parts)
    samples = sum(timeline.steps[i].samples for i in timeline.analyzed_steps())
    data.end_to_end = EndToEnd(
        seconds=wait + compute,
        samples=samples,
        batches=len(parts),
        wait_seconds=wait,
        compute_seconds=compute,
        num_workers=timeline.num_workers,
        batch_seconds=tuple(p.data_wait_seconds + p.compute_seconds for p in parts),
    )
    data.stages = [StageTiming("dataloader", wait, samples), StageTiming("step", compute, samples)]
    return data


def job_profile_data(job: JobTimeline, target: str, cores: int) -> ProfileData:
    """The whole job as one script-mode ProfileData (every rank's loop added up, the time blocked at
    collectives counted as step time), the job itself in `extra["multirank"]` for the straggler
    analyzer."""
    per_rank_cores = max(cores // max(job.world_size, 1), 1)
    summaries = [t.summary() for t in job.ranks]
    data = ProfileData(target=target, mode="script", cores=per_rank_cores)
    seconds = sum(s.seconds for s in summaries)
    if seconds > 0:
        wait = sum(s.data_wait_seconds for s in summaries)
        data.end_to_end = EndToEnd(
            seconds=seconds,
            samples=sum(s.samples for s in summaries),
            batches=sum(s.steps for s in summaries),
            wait_seconds=wait,
            compute_seconds=max(seconds - wait, 0.0),
            num_workers=max(t.num_workers for t in job.ranks),
            batch_seconds=tuple(job.ranks[0].steps[i].seconds for i in job.ranks[0].analyzed_steps()),
        )
        data.num_workers = data.end_to_end.num_workers
    data.extra["multirank"] = job
    return data
