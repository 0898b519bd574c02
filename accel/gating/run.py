"""Running a gate: take the samples (fresh processes), ask accel.gating.verdicts for verdicts, add pairs
while a verdict is undecided, and return one GateResult that the renderers turn into reports.

`gate_baseline` compares with a stored baseline (counts exactly, timings against the spread
between the baseline's runs); `gate_sides` measures two versions in lockstep process pairs
(accel.gating.live), looking after 6, 8, ... pairs with the error spent over the looks
(accel.gating.against runs it on the same file at a git ref); `calibrate` runs A/A pairs of one
file to measure its noise floor.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from accel.core.errors import BaselineError
from accel.core.loading import check_file
from accel.core.measure import now
from accel.core.progress import Progress
from accel.gating.baseline import Baseline, counts_fingerprint, load_baseline, proposed_path, save_baseline, with_counts
from accel.gating.bench import BenchConfig, Side, run_replicate
from accel.gating.estimates import MAX_PAIRS, START_PAIRS, planned_looks, spread
from accel.gating.live import lockstep_pair
from accel.gating.replicate import Replicate, environment_mismatch
from accel.gating.verdicts import (
    METRICS,
    MetricVerdict,
    Thresholds,
    Verdict,
    exit_code,
    invalid,
    judge_count,
    judge_pairs,
    judge_runs,
    overall,
    rebaseline,
)

GATE_SCHEMA = "accel.gate/2"
CALIBRATION_SCHEMA = "accel.gating.verdicts-calibration/1"
TIMED_METRICS = ("latency_seconds", "peak_memory_bytes")
RECOMMENDED_NOISE_MULTIPLE = 3.0


@dataclasses.dataclass(frozen=True)
class GateConfig:
    thresholds: Thresholds = Thresholds()
    bench: BenchConfig = BenchConfig()
    start_pairs: int = START_PAIRS
    max_pairs: int = MAX_PAIRS
    # Adding pairs stops here even below max_pairs: a gate must fit in a CI job.
    budget_seconds: float = 300.0
    timing: bool = True

    def __post_init__(self) -> None:
        if self.start_pairs < 1 or self.max_pairs < self.start_pairs:
            raise ValueError(f"GateConfig: need 1 <= start_pairs ({self.start_pairs}) <= max_pairs ({self.max_pairs})")
        if self.budget_seconds <= 0:
            raise ValueError(f"GateConfig.budget_seconds must be > 0, got {self.budget_seconds}")


@dataclasses.dataclass(frozen=True)
class GateResult:
    target: str
    mode: str  # "baseline" or "against"
    reference: str  # the baseline path or the git ref
    verdicts: tuple[MetricVerdict, ...]
    thresholds: Thresholds
    baseline_samples: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    candidate_samples: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    pairs: int = 0
    baseline_environment: dict[str, Any] = dataclasses.field(default_factory=dict)
    candidate_environment: dict[str, Any] = dataclasses.field(default_factory=dict)
    baseline_counts: dict[str, Any] | None = None
    candidate_counts: dict[str, Any] | None = None
    proposed_baseline: str | None = None
    elapsed_seconds: float = 0.0
    modules: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)  # side -> module -> file
    schema: str = GATE_SCHEMA

    @property
    def verdict(self) -> Verdict:
        return overall(self.verdicts)

    def exit_code(self, strict: bool = False) -> int:
        return exit_code(self.verdicts, strict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "target": self.target,
            "mode": self.mode,
            "reference": self.reference,
            "verdict": self.verdict.value,
            "thresholds": self.thresholds.to_dict(),
            "verdicts": [v.to_dict() for v in self.verdicts],
            "pairs": self.pairs,
            "samples": {"baseline": self.baseline_samples, "candidate": self.candidate_samples},
            "environment": {"baseline": self.baseline_environment, "candidate": self.candidate_environment},
            "counts": {"baseline": self.baseline_counts, "candidate": self.candidate_counts},
            "proposed_baseline": self.proposed_baseline,
            "elapsed_seconds": self.elapsed_seconds,
            "modules": self.modules,
        }


# --- timed metrics -----------------------------------------------------------------------------
def _values(replicates: list[Replicate], metric: str) -> list[float]:
    if metric == "latency_seconds":
        return [r.median_seconds for r in replicates]
    return [float(r.peak_memory_bytes) for r in replicates if r.peak_memory_bytes is not None]


def _count_verdicts(
    baseline: dict[str, Any] | None, candidate: dict[str, Any] | None, thresholds: Thresholds
) -> list[MetricVerdict]:
    if baseline is None or candidate is None:
        return [invalid("flops", thresholds.max_flops_growth, "counts missing on one side")]
    out = []
    for name, metric in METRICS.items():
        if metric.kind != "count" or name not in baseline or name not in candidate:
            continue
        out.append(judge_count(metric, float(baseline[name]), float(candidate[name]), thresholds.for_metric(metric)))
    return out


def _report(progress: Progress | None, message: str) -> None:
    if progress:
        progress(message)


# --- against a stored baseline -----------------------------------------------------------------
def gate_baseline(
    file: str | os.PathLike,
    baseline_path: str | os.PathLike,
    config: GateConfig = GateConfig(),
    *,
    lock: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> GateResult:
    """Compare a pipeline file with a stored baseline (two-sample ratio for timed metrics)."""
    started = now()
    path = check_file(file)
    baseline = load_baseline(baseline_path)
    if baseline.target and baseline.target != path.name:  # another pipeline's numbers would decide nothing
        raise BaselineError(
            f"{baseline_path} is the baseline of {baseline.target}, not {path.name}",
            f"gate {baseline.target} against it, or save one for this file: accel bench {path.name} --save-baseline PATH",
        )
    side = Side(file=path.resolve(), lock=Path(lock).resolve() if lock else None)
    _report(progress, "counting")
    first = run_replicate(side, config.bench, timing=False, counts=True)
    env, counts = first["environment"], first.get("counts")
    verdicts = _count_verdicts_against(baseline, counts, env, config.thresholds)
    replicates: list[Replicate] = []
    if config.timing:
        timed, replicates = _timed_verdicts_against(baseline, side, env, config, progress)
        verdicts += timed
    result_verdicts = tuple(verdicts)
    return GateResult(
        target=path.name,
        mode="baseline",
        reference=str(baseline_path),
        verdicts=result_verdicts,
        thresholds=config.thresholds,
        baseline_samples={m: baseline.values(m) for m in TIMED_METRICS},
        candidate_samples={m: _values(replicates, m) for m in TIMED_METRICS},
        pairs=len(replicates),
        baseline_environment=baseline.environment,
        candidate_environment=env,
        baseline_counts=baseline.counts,
        candidate_counts=counts,
        proposed_baseline=_proposed_baseline(baseline_path, baseline, counts, env, result_verdicts),
        elapsed_seconds=now() - started,
        modules={"candidate": first.get("modules", {})},
    )


def _count_verdicts_against(
    baseline: Baseline, counts: dict[str, Any] | None, env: dict[str, Any], thresholds: Thresholds
) -> list[MetricVerdict]:
    """The counted metrics against the baseline's; one rebaseline verdict where they were counted
    under another counting setup."""
    if not baseline.counts:
        return []
    here = counts_fingerprint(env)
    if baseline.counts_fingerprint and baseline.counts_fingerprint != here:
        return [rebaseline(baseline.counts_fingerprint, here)]
    return _count_verdicts(baseline.counts, counts, thresholds)


def _timed_verdicts_against(
    baseline: Baseline, side: Side, env: dict[str, Any], config: GateConfig, progress: Progress | None
) -> tuple[list[MetricVerdict], list[Replicate]]:
    """The timed metrics: one run as long as the baseline's runs, judged against the spread between
    them; INVALID where the baseline holds no timings or was measured in another environment."""
    thresholds = config.thresholds
    if not baseline.replicates:
        reason = "the baseline holds no timings (it was saved with counts only)"
        return [invalid("latency_seconds", thresholds.max_slowdown, reason)], []
    mismatch = environment_mismatch(baseline.environment, env)
    if mismatch:
        reason = "environment differs from the baseline's: " + "; ".join(mismatch)
        invalids = [invalid(m, thresholds.for_metric(METRICS[m]), reason) for m in TIMED_METRICS if baseline.values(m)]
        return invalids, []
    size = max(len(run) for run in baseline.runs)
    replicates = []
    for index in range(size):  # as many as the baseline's runs took, each said as bench says it
        _report(progress, f"replicate {index + 1}/{size}")
        replicates.append(Replicate.from_dict(run_replicate(side, config.bench)["replicate"]))
    verdicts = []
    for name in TIMED_METRICS:
        runs = baseline.run_values(name)
        now_values = _values(replicates, name)
        if any(runs) and now_values:
            metric = METRICS[name]
            verdicts.append(judge_runs(metric, runs, now_values, thresholds.for_metric(metric)))
    return verdicts, replicates


def _proposed_baseline(
    baseline_path: str | os.PathLike,
    baseline: Baseline,
    counts: dict[str, Any] | None,
    env: dict[str, Any],
    verdicts: tuple[MetricVerdict, ...],
) -> str | None:
    """Where a gate that improved and passed writes the baseline it proposes (with the new counts)."""
    improved = any(v.verdict is Verdict.IMPROVED for v in verdicts)
    if counts and improved and overall(verdicts) in (Verdict.IMPROVED, Verdict.PASS):
        return str(save_baseline(proposed_path(baseline_path), with_counts(baseline, counts, env)))
    return None


def gate_sides(
    base: Side,
    cand: Side,
    config: GateConfig = GateConfig(),
    *,
    progress: Progress | None = None,
    check_modules: Callable[[dict[str, str], dict[str, str]], None] | None = None,
) -> GateResult:
    """Two versions of a pipeline, measured in lockstep process pairs in this job.

    Looks after start_pairs, then every 2 pairs, up to max_pairs (or the budget); a metric once
    decided keeps its verdict (the design's error holds only if a decision is final)."""
    started = now()
    _report(progress, "counting")
    base_first = run_replicate(base, config.bench, timing=False, counts=True)
    cand_first = run_replicate(cand, config.bench, timing=False, counts=True)
    if check_modules is not None:  # before any timing: a side running the wrong code is refused
        check_modules(base_first.get("modules", {}), cand_first.get("modules", {}))
    verdicts: list[MetricVerdict] = _count_verdicts(
        base_first.get("counts"), cand_first.get("counts"), config.thresholds
    )
    pairs: list[tuple[Replicate, Replicate]] = []
    looks = planned_looks(config.start_pairs, config.max_pairs)
    if config.timing:
        decided: dict[str, MetricVerdict] = {}
        for look in looks:
            while len(pairs) < look:  # the pairs of this look, k of the look's n (more only while undecided)
                _report(progress, f"process pair {len(pairs) + 1}/{look} (at most {looks[-1]})")
                base_rep, cand_rep, _ = lockstep_pair(base, cand, config.bench, index=len(pairs))
                pairs.append((base_rep, cand_rep))
            final = look == looks[-1] or now() - started >= config.budget_seconds
            b, c = _side_values(pairs, 0), _side_values(pairs, 1)
            for name in TIMED_METRICS:
                if name in decided or not b.get(name) or len(b[name]) != len(c.get(name, [])):
                    continue
                metric = METRICS[name]
                found = judge_pairs(
                    metric, b[name], c[name], config.thresholds.for_metric(metric), final=final, looks=looks
                )
                if found is not None:
                    decided[name] = found
            if final or all(name in decided for name in TIMED_METRICS if b.get(name)):
                break
        verdicts += [decided[name] for name in TIMED_METRICS if name in decided]
    return GateResult(
        target=cand.file.name,
        mode="against",
        reference=str(base.file),
        verdicts=tuple(verdicts),
        thresholds=config.thresholds,
        baseline_samples=_side_values(pairs, 0),
        candidate_samples=_side_values(pairs, 1),
        pairs=len(pairs),
        baseline_environment=base_first["environment"],
        candidate_environment=cand_first["environment"],
        baseline_counts=base_first.get("counts"),
        candidate_counts=cand_first.get("counts"),
        elapsed_seconds=now() - started,
        modules={"baseline": base_first.get("modules", {}), "candidate": cand_first.get("modules", {})},
    )


def _side_values(pairs: list[tuple[Replicate, Replicate]], which: int) -> dict[str, list[float]]:
    return {m: _values([p[which] for p in pairs], m) for m in TIMED_METRICS}


# --- calibration -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class NoiseFloor:
    """A file's noise floor: its A/A process pairs' noise per timed metric, and the change each can resolve."""

    target: str
    pairs: int
    noise: dict[str, float]  # robust sd of the per-pair A/A change, per metric
    largest_change: dict[str, float]  # the largest |A/A change| of one pair, per metric
    thresholds: Thresholds
    below_noise: tuple[str, ...]  # threshold names the noise floor does not let the gate resolve
    schema: str = CALIBRATION_SCHEMA

    def recommended(self, metric: str) -> float:
        """Three times the per-pair noise: then an unchanged pair lies within the threshold about 99.9%
        of the time, so the sign test's first looks can PASS it (and a slowdown of twice the
        threshold FAIL)."""
        return RECOMMENDED_NOISE_MULTIPLE * self.noise.get(metric, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "thresholds": self.thresholds.to_dict(),
            "recommended": {m: self.recommended(m) for m in self.noise},
        }


def calibrate(
    file: str | os.PathLike, config: GateConfig = GateConfig(), pairs: int = 10, *, progress: Progress | None = None
) -> NoiseFloor:
    path = check_file(file).resolve()
    side = Side(file=path, cwd=path.parent)
    got = []
    for index in range(pairs):
        _report(progress, f"A/A process pair {index + 1}/{pairs}")
        got.append(lockstep_pair(side, side, config.bench, index=index)[:2])
    noise: dict[str, float] = {}
    largest: dict[str, float] = {}
    for name in TIMED_METRICS:
        a, b = _values([p[0] for p in got], name), _values([p[1] for p in got], name)
        if not a or len(a) != len(b):
            continue
        logs = np.log(np.maximum(b, 1e-9)) - np.log(np.maximum(a, 1e-9))
        noise[name] = math.expm1(spread(logs)) if len(logs) >= 2 else math.nan
        largest[name] = float(np.max(np.abs(np.expm1(logs))))
    below = tuple(
        METRICS[m].threshold
        for m, n in noise.items()
        if config.thresholds.for_metric(METRICS[m]) < RECOMMENDED_NOISE_MULTIPLE * n
    )
    return NoiseFloor(
        target=path.name,
        pairs=len(got),
        noise=noise,
        largest_change=largest,
        thresholds=config.thresholds,
        below_noise=below,
    )
