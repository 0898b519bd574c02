"""The gate's statistics and decision on synthetic samples (pure functions), and its reports."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accel.core.errors import AccelError
from accel.core.stats import bootstrap_ci
from accel.gating.reports import json_text, junit_xml, markdown
from accel.gating.run import GateResult
from accel.gating.thresholds import parse_percent, resolve_thresholds
from accel.gating.verdicts import (
    METRICS,
    Metric,
    MetricVerdict,
    Thresholds,
    Verdict,
    between_run_log_change,
    classify,
    exit_code,
    judge_count,
    judge_pairs,
    judge_runs,
    overall,
    paired_log_change,
    rebaseline,
    sort_by_severity,
)

LATENCY = METRICS["latency_seconds"]
FLOPS = METRICS["flops"]


def noisy(n: int, scale: float, noise: float, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(scale * np.exp(rng.normal(0.0, noise, n)))


def test_a_large_slowdown_fails():
    base = noisy(8, 1e-3, 0.01, 1)
    cand = [b * 1.30 for b in noisy(8, 1.0, 0.01, 2)]
    found = judge_pairs(LATENCY, base, [b * c for b, c in zip(base, cand)], 0.10, final=False)
    assert found.verdict is Verdict.FAIL
    assert found.interval[0] > 0.10 and found.change > 0.2
    assert "beyond" in found.reason


def test_unchanged_passes():
    base, cand = noisy(8, 1e-3, 0.01, 3), noisy(8, 1e-3, 0.01, 4)
    found = judge_pairs(LATENCY, base, cand, 0.10, final=False)
    assert found.verdict is Verdict.PASS
    assert found.interval[0] <= found.change <= found.interval[1]


def test_a_change_near_the_threshold_is_undecided_then_warns():
    base = noisy(8, 1e-3, 0.02, 5)
    cand = [b * 1.10 for b in noisy(8, 1e-3, 0.02, 6)]
    assert judge_pairs(LATENCY, base, cand, 0.10, final=False) is None
    final = judge_pairs(LATENCY, base, cand, 0.10, final=True)
    assert final.verdict is Verdict.WARN
    assert exit_code([final]) == 0


def test_noise_wider_than_the_threshold_is_invalid_and_says_so():
    base = [1e-3] * 8
    cand = [1e-3 * f for f in (0.5, 0.7, 0.9, 1.0, 1.0, 1.1, 1.3, 1.6)]  # estimate 0, interval wide
    found = judge_pairs(LATENCY, base, cand, 0.05, final=True)
    assert found.verdict is Verdict.INVALID
    assert "noise" in found.reason


def test_noise_never_hides_a_large_estimate():
    base = [1e-3] * 8
    cand = [1e-3 * f for f in (0.8, 1.1, 1.25, 1.3, 1.3, 1.35, 1.5, 1.9)]  # +30%, but far too noisy
    found = judge_pairs(LATENCY, base, cand, 0.10, final=True)
    assert found.verdict is Verdict.WARN and found.alarming
    assert "beyond" in found.reason and "noise" in found.reason
    assert exit_code([found]) == 0 and exit_code([found], strict=True) == 3


def test_too_few_samples_is_invalid():
    found = judge_pairs(LATENCY, [1.0] * 5, [2.0] * 5, 0.10, final=False)
    assert found.verdict is Verdict.INVALID and "too few" in found.reason


def runs_of(medians: list[float], seed: int, replicates: int = 6, noise: float = 0.05) -> list[list[float]]:
    return [noisy(replicates, m, noise, seed + i) for i, m in enumerate(medians)]


def test_stored_baseline_a_change_inside_the_between_run_spread_warns_not_fails():
    # The case: CI jobs whose medians range 1.9..2.6 ms; today's job at the slow end.
    runs = runs_of([1.9e-3, 2.3e-3, 2.6e-3], seed=20)
    today = noisy(6, 2.6e-3 * 1.05, 0.05, 30)  # +22% over the runs' mean, inside their spread
    found = judge_runs(LATENCY, runs, today, 0.10)
    assert found.verdict is Verdict.WARN
    assert found.interval[0] < 0.10 < found.change and "between-run" in found.reason
    assert found.noise is not None and found.noise > 0.05


def test_stored_baseline_fails_only_beyond_the_spread_and_passes_within():
    tight = runs_of([2.0e-3, 2.01e-3, 1.99e-3, 2.0e-3, 2.02e-3], seed=40, noise=0.005)
    slow = judge_runs(LATENCY, tight, noisy(6, 3.0e-3, 0.005, 50), 0.10)
    assert slow.verdict is Verdict.FAIL and slow.change == pytest.approx(0.5, abs=0.03)
    same = judge_runs(LATENCY, tight, noisy(6, 2.0e-3, 0.005, 51), 0.10)
    assert same.verdict is Verdict.PASS


def test_a_one_run_baseline_never_fails_on_timing():
    found = judge_runs(LATENCY, runs_of([1e-3], seed=60, noise=0.001), noisy(6, 2e-3, 0.001, 61), 0.10)
    assert found.verdict is Verdict.WARN and "--runs" in found.reason
    estimate, interval, sd = between_run_log_change(runs_of([1e-3], seed=60), noisy(6, 1e-3, 0.01, 62))
    assert math.isinf(interval[1]) and math.isnan(sd)


def test_counts_of_another_torch_say_rebaseline_never_fail():
    found = rebaseline({"torch_version": "2.12.0", "device": "cpu"}, {"torch_version": "2.13.0", "device": "cpu"})
    assert found.verdict is Verdict.REBASELINE and "re-baseline" in found.reason and "2.12.0" in found.reason
    assert exit_code([found]) == 0 and exit_code([found], strict=True) == 3


def test_direction_makes_plus_mean_worse():
    throughput = Metric("samples_per_s", "samples/s", "max_slowdown", "timed", direction=-1)
    base = noisy(8, 1000.0, 0.01, 12)
    lower = [b * 0.7 for b in base]  # 30% less throughput: worse
    found = judge_pairs(throughput, base, lower, 0.10, final=False)
    assert found.verdict is Verdict.FAIL and found.change > 0
    higher = [b * 1.5 for b in base]
    assert judge_pairs(throughput, base, higher, 0.10, final=False).verdict is Verdict.PASS


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(1e-4, 1.0), min_size=6, max_size=12), st.floats(0.5, 3.0))
def test_a_constant_factor_is_estimated_exactly(values, factor):
    estimate, (low, high) = paired_log_change(values, [v * factor for v in values])
    assert math.isclose(estimate, math.log(factor), abs_tol=1e-9)
    assert math.isclose(low, high, abs_tol=1e-9)


def test_counts_are_exact():
    assert judge_count(FLOPS, 1000, 1000, 0.0).verdict is Verdict.PASS
    grown = judge_count(FLOPS, 1000, 1001, 0.0)
    assert grown.verdict is Verdict.FAIL and grown.change > 0
    assert judge_count(FLOPS, 1000, 1040, 0.05).verdict is Verdict.PASS
    dropped = judge_count(FLOPS, 1000, 900, 0.0)
    assert dropped.verdict is Verdict.IMPROVED and "dropped" in dropped.reason
    assert judge_count(FLOPS, 0, 5, 0.0).verdict is Verdict.FAIL


def test_exit_codes_and_overall():
    def v(kind):
        return MetricVerdict("m", kind, 0.0, (0.0, 0.0), 0.1, 6, "r")

    assert exit_code([v(Verdict.PASS), v(Verdict.WARN), v(Verdict.IMPROVED)]) == 0
    assert exit_code([v(Verdict.PASS), v(Verdict.FAIL), v(Verdict.INVALID)], strict=True) == 1
    assert exit_code([v(Verdict.INVALID)]) == 0
    assert exit_code([v(Verdict.INVALID)], strict=True) == 3
    assert overall([v(Verdict.PASS), v(Verdict.WARN)]) is Verdict.WARN
    assert overall([]) is Verdict.PASS
    ordered = sort_by_severity([v(Verdict.PASS), v(Verdict.FAIL), v(Verdict.WARN), v(Verdict.INVALID)])
    assert [x.verdict for x in ordered] == [Verdict.FAIL, Verdict.INVALID, Verdict.WARN, Verdict.PASS]


def test_classify_rejects_nothing_silently():
    assert classify("m", math.log(1.5), (math.log(1.4), math.log(1.6)), 0.1, 6, final=False).verdict is Verdict.FAIL


def test_thresholds_validate_and_parse():
    with pytest.raises(ValueError, match="max_slowdown"):
        Thresholds(max_slowdown=-0.1)
    assert parse_percent("10%", "x") == pytest.approx(0.10)
    assert parse_percent("2.5", "x") == pytest.approx(0.025)
    with pytest.raises(AccelError):
        parse_percent("fast", "--max-slowdown")


def test_thresholds_from_pyproject_and_flags(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text('[tool.accel.gate]\nmax-slowdown = "7%"\nmax-flops-growth = 1\n')
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    found = resolve_thresholds({"max_slowdown": None, "max_memory_growth": "20%"}, inner)
    assert found.max_slowdown == pytest.approx(0.07)
    assert found.max_flops_growth == pytest.approx(0.01)
    assert found.max_memory_growth == pytest.approx(0.20)
    assert resolve_thresholds({"max_slowdown": "3%"}, inner).max_slowdown == pytest.approx(0.03)
    (tmp_path / "pyproject.toml").write_text('[tool.accel.gate]\nmax-speed = "7%"\n')
    with pytest.raises(AccelError, match="max-speed"):
        resolve_thresholds({}, inner)


def _result() -> GateResult:
    verdicts = (
        judge_count(FLOPS, 1000, 1500, 0.0),
        judge_pairs(LATENCY, noisy(6, 1e-3, 0.01, 1), noisy(6, 1e-3, 0.01, 2), 0.10, final=True),
        MetricVerdict(
            "peak_memory_bytes", Verdict.INVALID, math.nan, (math.nan, math.nan), 0.1, 0, "environment differs"
        ),
    )
    return GateResult(
        target="p.py", mode="against", reference="HEAD~1", verdicts=verdicts, thresholds=Thresholds(), pairs=6
    )


def test_junit_is_valid_xml_with_the_failure():
    root = ET.fromstring(junit_xml(_result()))
    suite = root.find("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "1" and suite.get("errors") == "1"
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["flops"]
    text = failed[0].find("failure").text
    assert "+50.0%" in text and "samples" in text and "CI" in text


def test_markdown_sorted_by_severity_and_json_is_strict():
    import json

    text = markdown(_result())
    rows = [line for line in text.splitlines() if line.startswith("| ") and "metric" not in line]
    assert "flops" in rows[0] and "peak_memory_bytes" in rows[1] and "latency" in rows[2]
    data = json.loads(json_text(_result()), parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert data["verdict"] == "fail"
    assert data["verdicts"][2]["change"] is None


# --- the interval and the sequential design (accel.core.stats) -----------------------------------
def test_the_order_statistic_interval_holds_its_level_where_the_bootstrap_does_not():
    from accel.core.stats import binomial_tail, median_order_ci, median_rank

    for n in range(6, 30):
        k = median_rank(n)
        assert 1 - 2 * binomial_tail(n, k - 1) >= 0.95  # exact coverage, any continuous distribution
    assert median_rank(5) == 0 and math.isinf(median_order_ci([1, 2, 3, 4, 5])[1])
    rng = np.random.default_rng(0)
    data = rng.lognormal(0.0, 0.5, size=(400, 6))
    exact = np.mean([lo <= 1.0 <= hi for lo, hi in (median_order_ci(row) for row in data)])
    boot = np.mean([lo <= 1.0 <= hi for lo, hi in (bootstrap_ci(row[:4], resamples=400) for row in data)])
    assert exact >= 0.93 and boot < 0.92  # the issue: the bootstrap covers about 88% at n=4


def _sequential_gate(logs: np.ndarray, limit: float, looks: tuple[int, ...], designed: bool) -> str:
    base = [1.0] * len(logs)
    cand = list(np.exp(logs))
    for look in looks:
        found = judge_pairs(
            LATENCY, base[:look], cand[:look], limit, final=look == looks[-1], looks=looks if designed else None
        )
        if found is not None:
            return found.verdict.value
    return "undecided"


def test_the_error_rate_holds_over_the_looks():
    from accel.core.stats import sequential_crossing_probability, sequential_median_ranks
    from accel.gating.verdicts import ALPHA_PER_SIDE, SPENDING_RHO, planned_looks

    looks = planned_looks()
    ranks = sequential_median_ranks(looks, ALPHA_PER_SIDE, SPENDING_RHO)
    assert ranks[0] >= 1  # a decision is possible at the first look
    assert sequential_crossing_probability(looks, ranks, 0.5) <= ALPHA_PER_SIDE
    # Simulated at a true change equal to the threshold: each side stays within 2.5% (+ sampling
    # error), where testing at 95% at each look without the design exceeds it (the issue: 9.5%).
    rng = np.random.default_rng(1)
    threshold = 0.05
    sims = rng.normal(math.log1p(threshold), 0.03, size=(1500, looks[-1]))
    designed = [_sequential_gate(row, threshold, looks, True) for row in sims]
    naive = [_sequential_gate(row, threshold, looks, False) for row in sims]
    for kind in ("fail", "pass"):
        assert designed.count(kind) / len(sims) <= 0.035
    assert naive.count("fail") / len(sims) > designed.count("fail") / len(sims)


def test_student_t_quantiles():
    from accel.core.stats import student_t_quantile

    for df, expected in ((1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262)):
        assert student_t_quantile(0.975, df) == pytest.approx(expected, abs=2e-3)
    assert student_t_quantile(0.025, 4) == pytest.approx(-2.776, abs=2e-3)
