"""The gate's decision: pure functions from estimated changes (accel.gating.estimates) to verdicts.

A timed metric (latency, peak memory) is judged on one number per fresh process.

- `--against`: the processes come in pairs (timed in lockstep, accel.gating.live) and the statistic
  is the median of the per-pair log ratios candidate/baseline. Its interval is an exact
  order-statistic interval (a sign test, valid for any distribution, unlike the percentile
  bootstrap that covers about 88% at n=4), and the gate looks at it after 6, 8, ... 16 pairs with
  the error spent over the looks (accel.core.stats.sequential_median_ranks), so the chance of a
  FAIL when the true change equals the threshold stays at 2.5% however many looks are taken, and
  the same for a PASS.
- `--baseline`: the baseline holds several runs (CI jobs); the statistic is the log of this run's
  median latency minus the mean over the stored runs, with a prediction interval from the
  between-run spread (accel.core.stats.new_run_interval). A change inside that spread is WARN.

Verdicts follow from where the interval lies relative to the threshold:

- FAIL: the whole interval lies beyond the threshold (a regression, exit 1);
- PASS: the whole interval lies within it;
- undecided: more pairs are taken; when none may be added, WARN (non-blocking);
- INVALID: too few samples, noise wider than the threshold can resolve, or environments differ.
  Noise never hides a large estimate: when the estimate itself lies beyond the threshold the
  verdict is WARN, and `--strict` exits non-zero on it.
- REBASELINE: counts measured with another torch version or device (decompositions and attention
  backends change them), so they cannot be compared; never a FAIL.

Counts (FLOPs, bytes moved, op count, parameter bytes) do not depend on the machine: they are
compared exactly, and a drop is reported as IMPROVED so the baseline can be updated on purpose.
Every metric knows its direction, so a change of +5% always means 5% worse. Each timed verdict
carries the noise floor it was decided under (`noise`, the per-pair or between-run spread).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from typing import Any, Sequence

import numpy as np

from accel.gating.estimates import (  # noqa: F401 - ALPHA_PER_SIDE, SPENDING_RHO and planned_looks are part of this module's API
    ALPHA_PER_SIDE,
    MIN_SAMPLES,
    SPENDING_RHO,
    as_positive,
    between_run_log_change,
    paired_log_change,
    planned_looks,
    spread,
)


class Verdict(str, enum.Enum):
    PASS = "pass"
    IMPROVED = "improved"
    WARN = "warn"
    FAIL = "fail"
    INVALID = "invalid"
    REBASELINE = "rebaseline"


# Most severe first: the order of the Markdown table and of the overall verdict.
SEVERITY_ORDER = (
    Verdict.FAIL,
    Verdict.INVALID,
    Verdict.REBASELINE,
    Verdict.WARN,
    Verdict.IMPROVED,
    Verdict.PASS,
)


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
    noise: float | None = None  # the noise floor it was decided under, as a fraction

    @property
    def alarming(self) -> bool:
        """Undecided, but the estimate itself lies beyond the threshold: never silent."""
        return self.verdict is Verdict.WARN and not math.isnan(self.change) and self.change > self.threshold

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["verdict"] = self.verdict.value
        data["interval"] = list(self.interval)
        return data


def classify(
    metric: str,
    log_change: float,
    log_interval: tuple[float, float],
    threshold: float,
    samples: int,
    *,
    final: bool,
    min_samples: int = MIN_SAMPLES,
    noise: float | None = None,
    spread_name: str = "per-pair",
    advisory: bool = False,
) -> MetricVerdict | None:
    """The verdict for a timed metric, or None when it is undecided and more pairs may be taken."""
    change = math.expm1(log_change) if not math.isnan(log_change) else math.nan
    interval = (
        (math.expm1(log_interval[0]), math.expm1(log_interval[1]))
        if not math.isnan(log_interval[0])
        else (math.nan, math.nan)
    )
    noise_fraction = math.expm1(noise) if noise is not None and not math.isnan(noise) else None

    def verdict(kind: Verdict, reason: str) -> MetricVerdict:
        return MetricVerdict(metric, kind, change, interval, threshold, samples, reason, noise=noise_fraction)

    if samples < min_samples:
        return verdict(Verdict.INVALID, f"too few samples: {samples} per side, at least {min_samples} needed")
    limit = math.log1p(threshold)
    floor = f", {spread_name} noise ±{noise_fraction * 100:.1f}%" if noise_fraction is not None else ""
    span = f"{_pct(change)} (95% CI {_pct(interval[0])} .. {_pct(interval[1])}, n={samples}{floor})"
    allowed = _pct(threshold, signed=False)
    if log_interval[0] > limit:
        return verdict(Verdict.FAIL, f"{span} lies beyond the {allowed} threshold")
    if log_interval[1] <= limit:
        return verdict(Verdict.PASS, f"{span} lies within the {allowed} threshold")
    if not final:
        return None
    half_width = (log_interval[1] - log_interval[0]) / 2.0
    if (half_width > limit or math.isinf(half_width)) and not advisory:
        if log_change > limit:
            return verdict(
                Verdict.WARN,
                f"{span}: the estimate lies beyond the {allowed} threshold, but the noise is too high to "
                "decide (run accel gate calibrate; --strict exits 3 on this)",
            )
        return verdict(
            Verdict.INVALID,
            f"noise too high: {span} is wider than the {allowed} threshold can resolve (run accel gate calibrate)",
        )
    if advisory and log_change > limit:
        return verdict(Verdict.WARN, f"{span}: the estimate lies beyond the {allowed} threshold, inside the spread")
    return verdict(Verdict.WARN, f"{span} straddles the {allowed} threshold")


def judge_pairs(
    metric: Metric,
    baseline: Sequence[float],
    candidate: Sequence[float],
    threshold: float,
    *,
    final: bool,
    looks: Sequence[int] | None = None,
) -> MetricVerdict | None:
    """A timed metric from process pairs: median per-pair log ratio, sequential exact interval."""
    log_change, log_ci = paired_log_change(baseline, candidate, metric.direction, looks)
    logs = np.log(as_positive(candidate)) - np.log(as_positive(baseline[: len(candidate)]))
    found = classify(
        metric.name,
        log_change,
        log_ci,
        threshold,
        min(len(baseline), len(candidate)),
        final=final,
        noise=spread(logs),
    )
    return _with_values(found, baseline, candidate)


def judge_runs(
    metric: Metric, runs: Sequence[Sequence[float]], candidate: Sequence[float], threshold: float
) -> MetricVerdict:
    """A timed metric against a stored baseline of several runs: the between-run spread decides."""
    log_change, log_ci, sd = between_run_log_change(runs, candidate, metric.direction)
    stored = [v for r in runs for v in r]
    if len([r for r in runs if len(r)]) < 2:
        found = classify(
            metric.name, log_change, (-math.inf, math.inf), threshold, len(candidate), final=True, min_samples=1
        )
        assert found is not None
        found = dataclasses.replace(
            found,
            reason=found.reason + "; the baseline holds one run, so the spread between runs is unknown "
            "(save it with accel bench --save-baseline PATH --runs 3, or --merge runs from CI)",
        )
    else:
        found = classify(
            metric.name,
            log_change,
            log_ci,
            threshold,
            len(candidate),
            final=True,
            min_samples=1,
            noise=sd,
            spread_name=f"between-run ({len(runs)} runs)",
            advisory=True,
        )
        assert found is not None
    return _with_values(found, stored, candidate)  # type: ignore[return-value]


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


def rebaseline(stored: dict[str, Any], current: dict[str, Any]) -> MetricVerdict:
    """Counts of another torch version or device: not comparable, so re-baseline (never FAIL)."""
    reason = (
        f"counts were measured with {_where(stored)}, this is {_where(current)}: op decompositions and "
        "backends differ, so re-baseline (accel bench FILE --save-baseline PATH)"
    )
    return MetricVerdict("counts", Verdict.REBASELINE, math.nan, (math.nan, math.nan), 0.0, 0, reason)


def _where(fingerprint: dict[str, Any]) -> str:
    text = f"torch {fingerprint.get('torch_version', '?')} on {fingerprint.get('device', '?')}"
    return text + (f" ({fingerprint['gpu']})" if fingerprint.get("gpu") else "")


def exit_code(verdicts: Sequence[MetricVerdict], strict: bool = False) -> int:
    """0 pass/warn/improved/rebaseline, 1 regression; under --strict 3 when a measurement is
    invalid, the counts need a re-baseline, or a warning's estimate lies beyond its threshold."""
    kinds = {v.verdict for v in verdicts}
    if Verdict.FAIL in kinds:
        return 1
    if strict and (kinds & {Verdict.INVALID, Verdict.REBASELINE} or any(v.alarming for v in verdicts)):
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
