"""The gate's statistics and decision: pure functions from samples to verdicts.

A timed metric (latency, peak memory) is judged on one number per fresh process. With `--against`
the processes come in pairs (AB, BA, ...) and the statistic is the median of the per-pair log
ratios candidate/baseline; against a stored baseline it is the log ratio of the two samples'
medians. Either way a percentile bootstrap gives a 95% interval, and the verdict follows from
where that interval lies relative to the threshold:

- FAIL: the whole interval lies beyond the threshold (a regression, exit 1);
- PASS: the whole interval lies within it;
- undecided: more pairs are taken; when none may be added, WARN (non-blocking);
- INVALID: too few samples, noise wider than the threshold can resolve, or environments differ.

Counts (FLOPs, bytes moved, op count, parameter bytes) do not depend on the machine: they are
compared exactly, and a drop is reported as IMPROVED so the baseline can be updated on purpose.
Every metric knows its direction, so a change of +5% always means 5% worse.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any, Sequence

import numpy as np

from accel.core.stats import bootstrap_ci, two_sample_ci

# Fewer than this many processes per side cannot give a bootstrap interval worth the name: with
# four values the percentile bootstrap of the median spans at best the 2nd..3rd order statistic.
MIN_SAMPLES = 4
# Where the adaptive loop starts and stops: 6 pairs decide clear cases; past 16 the interval
# narrows by sqrt(n) only, slower than CI machines drift.
START_PAIRS = 6
MAX_PAIRS = 16
CONFIDENCE = 0.95


class Verdict(str, enum.Enum):
    PASS = "pass"
    IMPROVED = "improved"
    WARN = "warn"
    FAIL = "fail"
    INVALID = "invalid"


# Most severe first: the order of the Markdown table and of the overall verdict.
SEVERITY_ORDER = (Verdict.FAIL, Verdict.INVALID, Verdict.WARN, Verdict.IMPROVED, Verdict.PASS)


@dataclasses.dataclass(frozen=True)
class Metric:
    """What a gate metric is: its unit, which way is worse, and which threshold judges it."""

    name: str
    unit: str
    threshold: str
    kind: str  # "timed" (sampled per process) or "count" (exact)
    direction: int = 1  # +1: a larger value is worse; -1: a smaller value is worse

    def __post_init__(self) -> None:
        if self.kind not in ("timed", "count"):
            raise ValueError(f"Metric {self.name}: kind must be 'timed' or 'count', got {self.kind!r}")
        if self.direction not in (1, -1):
            raise ValueError(f"Metric {self.name}: direction must be 1 or -1, got {self.direction}")


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("latency_seconds", "seconds", "max_slowdown", "timed"),
        Metric("peak_memory_bytes", "bytes", "max_memory_growth", "timed"),
        Metric("flops", "flop", "max_flops_growth", "count"),
        Metric("bytes_moved", "bytes", "max_bytes_growth", "count"),
        Metric("op_count", "ops", "max_ops_growth", "count"),
        Metric("parameter_bytes", "bytes", "max_parameter_growth", "count"),
        Metric("kernel_launches", "launches", "max_ops_growth", "count"),
    )
}


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """How much worse each metric may get, as a fraction (0.10 = 10% worse)."""

    max_slowdown: float = 0.10
    max_memory_growth: float = 0.10
    max_flops_growth: float = 0.0
    max_bytes_growth: float = 0.0
    max_ops_growth: float = 0.0
    max_parameter_growth: float = 0.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
                raise ValueError(f"Thresholds.{field.name} must be a fraction >= 0, got {value!r}")

    def for_metric(self, metric: Metric) -> float:
        return float(getattr(self, metric.threshold))

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class MetricVerdict:
    """One metric's decision with its evidence: the estimated change (+ is worse), its interval."""

    metric: str
    verdict: Verdict
    change: float
    interval: tuple[float, float]
    threshold: float
    samples: int
    reason: str
    baseline_value: float | None = None
    candidate_value: float | None = None

    @property
    def blocking(self) -> bool:
        return self.verdict is Verdict.FAIL

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["verdict"] = self.verdict.value
        data["interval"] = list(self.interval)
        return data


# --- statistics --------------------------------------------------------------------------------
def paired_log_change(
    baseline: Sequence[float], candidate: Sequence[float], direction: int = 1, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """Median of per-pair log(candidate/baseline), signed so + is worse, with a bootstrap CI."""
    a, b = _positive(baseline), _positive(candidate)
    if a.size != b.size:
        raise ValueError(f"paired samples need equal lengths, got {a.size} and {b.size}")
    logs = direction * (np.log(b) - np.log(a))
    if logs.size == 0:
        return math.nan, (math.nan, math.nan)
    estimate = float(np.median(logs))
    if logs.size == 1:
        return estimate, (estimate, estimate)
    return estimate, bootstrap_ci(logs, confidence=CONFIDENCE, seed=seed)


def two_sample_log_change(
    baseline: Sequence[float], candidate: Sequence[float], direction: int = 1, seed: int = 0
) -> tuple[float, tuple[float, float]]:
    """log(median(candidate)/median(baseline)), signed so + is worse; each side resampled alone."""
    a, b = _positive(baseline), _positive(candidate)
    if a.size == 0 or b.size == 0:
        return math.nan, (math.nan, math.nan)
    estimate = direction * float(np.log(np.median(b)) - np.log(np.median(a)))
    return estimate, two_sample_ci(
        a, b, lambda med_a, med_b: direction * (np.log(med_b) - np.log(med_a)), confidence=CONFIDENCE, seed=seed
    )


def _positive(values: Sequence[float]) -> np.ndarray:
    data = np.asarray(values, dtype=float)
    # A zero (e.g. no tensor memory at all) would make the log infinite: a byte or a
    # nanosecond is far below anything the gate resolves.
    return np.maximum(data, 1e-9)


# --- decisions ---------------------------------------------------------------------------------
def classify(
    metric: str, log_change: float, log_interval: tuple[float, float], threshold: float, samples: int, *, final: bool
) -> MetricVerdict | None:
    """The verdict for a timed metric, or None when it is undecided and more pairs may be taken."""
    change = math.expm1(log_change) if not math.isnan(log_change) else math.nan
    interval = (
        (math.expm1(log_interval[0]), math.expm1(log_interval[1]))
        if not math.isnan(log_interval[0])
        else (math.nan, math.nan)
    )

    def verdict(kind: Verdict, reason: str) -> MetricVerdict:
        return MetricVerdict(metric, kind, change, interval, threshold, samples, reason)

    if samples < MIN_SAMPLES:
        return verdict(Verdict.INVALID, f"too few samples: {samples} per side, at least {MIN_SAMPLES} needed")
    limit = math.log1p(threshold)
    span = f"{_pct(change)} (95% CI {_pct(interval[0])} .. {_pct(interval[1])}, n={samples})"
    if log_interval[0] > limit:
        return verdict(Verdict.FAIL, f"{span} lies beyond the {_pct(threshold, signed=False)} threshold")
    if log_interval[1] <= limit:
        return verdict(Verdict.PASS, f"{span} lies within the {_pct(threshold, signed=False)} threshold")
    if not final:
        return None
    half_width = (log_interval[1] - log_interval[0]) / 2.0
    if half_width > limit:
        return verdict(
            Verdict.INVALID,
            f"noise too high: {span} is wider than the {_pct(threshold, signed=False)} "
            "threshold can resolve (run accel gate calibrate)",
        )
    return verdict(Verdict.WARN, f"{span} straddles the {_pct(threshold, signed=False)} threshold")


def judge_pairs(
    metric: Metric, baseline: Sequence[float], candidate: Sequence[float], threshold: float, *, final: bool
) -> MetricVerdict | None:
    """A timed metric from process pairs (AB, BA, ...): median per-pair log ratio."""
    log_change, log_ci = paired_log_change(baseline, candidate, metric.direction)
    found = classify(metric.name, log_change, log_ci, threshold, min(len(baseline), len(candidate)), final=final)
    return _with_values(found, baseline, candidate)


def judge_samples(
    metric: Metric, baseline: Sequence[float], candidate: Sequence[float], threshold: float, *, final: bool
) -> MetricVerdict | None:
    """A timed metric against a stored baseline: the two samples' ratio of medians."""
    log_change, log_ci = two_sample_log_change(baseline, candidate, metric.direction)
    found = classify(metric.name, log_change, log_ci, threshold, min(len(baseline), len(candidate)), final=final)
    return _with_values(found, baseline, candidate)


def _with_values(
    found: MetricVerdict | None, baseline: Sequence[float], candidate: Sequence[float]
) -> MetricVerdict | None:
    if found is None or not len(baseline) or not len(candidate):
        return found
    return dataclasses.replace(
        found, baseline_value=float(np.median(baseline)), candidate_value=float(np.median(candidate))
    )


def judge_count(metric: Metric, baseline: float, candidate: float, threshold: float) -> MetricVerdict:
    """An exact count: FAIL beyond its threshold, IMPROVED when it dropped, else PASS."""
    if baseline == candidate:
        change = 0.0
    elif baseline == 0:
        change = math.inf * metric.direction * (1 if candidate > 0 else -1)
    else:
        change = metric.direction * (candidate - baseline) / baseline
    values = f"{_number(baseline)} -> {_number(candidate)} ({_pct(change)})"
    if change > threshold:
        kind, reason = Verdict.FAIL, f"{values}: more than the {_pct(threshold, signed=False)} allowed"
    elif change < 0:
        kind, reason = Verdict.IMPROVED, f"{values}: dropped; review and update the baseline"
    else:
        kind, reason = Verdict.PASS, f"{values}: within the {_pct(threshold, signed=False)} allowed"
    return MetricVerdict(
        metric.name,
        kind,
        change,
        (change, change),
        threshold,
        1,
        reason,
        baseline_value=float(baseline),
        candidate_value=float(candidate),
    )


def invalid(metric: str, threshold: float, reason: str, samples: int = 0) -> MetricVerdict:
    return MetricVerdict(metric, Verdict.INVALID, math.nan, (math.nan, math.nan), threshold, samples, reason)


def overall(verdicts: Sequence[MetricVerdict]) -> Verdict:
    """The most severe verdict; PASS when there is none."""
    present = {v.verdict for v in verdicts}
    return next((kind for kind in SEVERITY_ORDER if kind in present), Verdict.PASS)


def exit_code(verdicts: Sequence[MetricVerdict], strict: bool = False) -> int:
    """0 pass/warn/improved, 1 regression, 3 invalid measurement under --strict."""
    kinds = {v.verdict for v in verdicts}
    if Verdict.FAIL in kinds:
        return 1
    if strict and Verdict.INVALID in kinds:
        return 3
    return 0


def sort_by_severity(verdicts: Sequence[MetricVerdict]) -> list[MetricVerdict]:
    rank = {kind: i for i, kind in enumerate(SEVERITY_ORDER)}
    return sorted(verdicts, key=lambda v: (rank[v.verdict], -(v.change if not math.isnan(v.change) else -math.inf)))


def _pct(fraction: float, signed: bool = True) -> str:
    if math.isnan(fraction):
        return "n/a"
    if math.isinf(fraction):
        return "+inf%" if fraction > 0 else "-inf%"
    return f"{fraction * 100:+.1f}%" if signed else f"{fraction * 100:.1f}%"


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.4g}"
