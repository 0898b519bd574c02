"""The gate's statistics and decision on synthetic samples (pure functions), and its reports."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accel.core.errors import AccelError
from accel.gating.reports import json_text, junit_xml, markdown
from accel.gating.run import GateResult, parse_percent, resolve_thresholds
from accel.gating.verdicts import (
    METRICS,
    Metric,
    MetricVerdict,
    Thresholds,
    Verdict,
    classify,
    exit_code,
    judge_count,
    judge_pairs,
    judge_samples,
    overall,
    paired_log_change,
    sort_by_severity,
    two_sample_log_change,
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
    base, cand = noisy(8, 1e-3, 0.6, 7), noisy(8, 1e-3, 0.6, 8)
    found = judge_pairs(LATENCY, base, cand, 0.05, final=True)
    assert found.verdict is Verdict.INVALID
    assert "noise" in found.reason


def test_too_few_samples_is_invalid():
    found = judge_pairs(LATENCY, [1.0, 1.0, 1.0], [2.0, 2.0, 2.0], 0.10, final=False)
    assert found.verdict is Verdict.INVALID and "too few" in found.reason


def test_two_sample_against_a_baseline():
    base = noisy(6, 1e-3, 0.01, 9)
    slow = noisy(10, 1.5e-3, 0.01, 10)
    assert judge_samples(LATENCY, base, slow, 0.10, final=False).verdict is Verdict.FAIL
    same = noisy(10, 1e-3, 0.01, 11)
    assert judge_samples(LATENCY, base, same, 0.10, final=False).verdict is Verdict.PASS
    estimate, (low, high) = two_sample_log_change(base, slow)
    assert low <= estimate <= high and math.isclose(estimate, math.log(1.5), abs_tol=0.03)


def test_direction_makes_plus_mean_worse():
    throughput = Metric("samples_per_s", "samples/s", "max_slowdown", "timed", direction=-1)
    base = noisy(8, 1000.0, 0.01, 12)
    lower = [b * 0.7 for b in base]  # 30% less throughput: worse
    found = judge_pairs(throughput, base, lower, 0.10, final=False)
    assert found.verdict is Verdict.FAIL and found.change > 0
    higher = [b * 1.5 for b in base]
    assert judge_pairs(throughput, base, higher, 0.10, final=False).verdict is Verdict.PASS


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(1e-4, 1.0), min_size=4, max_size=12), st.floats(0.5, 3.0))
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
    (tmp_path / "pyproject.toml").write_text(
        '[tool.accel.gate]\nmax-slowdown = "7%"\nmax-flops-growth = 1\n'
    )
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
