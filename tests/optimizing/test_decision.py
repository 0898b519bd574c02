"""The one keep test (accel.optimizing.decision): fed numbers, it decides and says why; verify
holds a lock to the thresholds the lock recorded."""

from __future__ import annotations

import json

import pytest

from accel.core.measure import Comparison, Measurement
from accel.optimizing.decision import Cause, KeepTest, Verdict, decide
from accel.optimizing.lock import Lock
from accel.optimizing.recipes.schema import DEFAULT_MIN_MEMORY_SAVING, parse_recipe
from accel.optimizing.search.verify import keep_test, recheck

LATENCY = KeepTest("latency", min_speedup=1.03)


def test_verdict_values_are_the_strings_reports_carry():
    assert [v.value for v in Verdict] == ["accepted", "reverted", "not applicable", "failed", "skipped"]
    assert json.dumps(Verdict.NOT_APPLICABLE) == '"not applicable"' and f"{Verdict.SKIPPED}" == "skipped"
    assert Verdict("accepted") is Verdict.ACCEPTED and Verdict.ACCEPTED == "accepted"


def test_a_too_slow_candidate_is_reverted_as_slower():
    decision = decide(LATENCY, 0.8, (0.7, 0.9))
    assert not decision.kept and decision.cause is Cause.SLOWER and decision.verdict is Verdict.REVERTED
    assert decision.reason == "slower"
    assert decision.describe(against="the plain pipeline") == "slower than the plain pipeline"


def test_a_gain_within_noise_is_reverted_with_its_interval():
    decision = decide(LATENCY, 1.04, (0.99, 1.09))
    assert not decision.kept and decision.cause is Cause.WITHIN_NOISE
    assert decision.reason == "not faster beyond noise (interval reaches 0.99x, needs > 1.03x)"


def test_a_gain_beyond_noise_is_kept_and_says_so():
    decision = decide(LATENCY, 1.5, (1.3, 1.7))
    assert decision.kept and decision.cause is Cause.FASTER and decision.verdict is Verdict.ACCEPTED
    assert decision.reason == "kept: interval above 1.03x"
    spread = decide(KeepTest("latency", 1.03, passes=10), 1.5, (1.3, 1.7), spread_one_time=True)
    assert spread.reason == "kept: interval above 1.03x, its per-process cost spread over 10 passes"


def test_a_candidate_failing_the_guard_is_reverted_however_fast():
    decision = decide(LATENCY, 5.0, (4.0, 6.0), guard_failure="worst cosine 0.12 < 0.999")
    assert not decision.kept and decision.cause is Cause.GUARD and decision.reason == "worst cosine 0.12 < 0.999"
    assert decision.speedup == 5.0  # the numbers stay beside the reason


def test_memory_candidates_are_held_to_saving_and_slowdown():
    memory = KeepTest("memory", min_memory_saving=0.10, max_slowdown=1.25)
    kept = decide(memory, 0.9, (0.85, 0.95), memory_ratio=0.5)
    assert kept.kept and kept.cause is Cause.SAVES_MEMORY and kept.reason == "kept: peak memory x0.50"
    little = decide(memory, 1.0, (0.95, 1.05), memory_ratio=0.95)
    assert not little.kept and little.cause is Cause.TOO_LITTLE_SAVED
    assert little.reason == "saves too little memory (x0.95, needs x0.90 or less)"
    slow = decide(memory, 0.5, (0.4, 0.6), memory_ratio=0.5)
    assert not slow.kept and slow.cause is Cause.TOO_SLOW and "2.00x slower, beyond the 1.25x allowed" in slow.reason
    unmeasured = decide(memory, 2.0, (1.8, 2.2))
    assert not unmeasured.kept and unmeasured.cause is Cause.TOO_LITTLE_SAVED


def test_the_recipe_keep_section_becomes_the_test():
    recipe = parse_recipe(
        {
            "name": "m",
            "target": "memory",
            "keep": {"min_memory_saving": 0.2, "max_slowdown": 2.0},
            "rules": [{"name": "r", "try": ["compile"]}],
        }
    )
    test = KeepTest.of(recipe)
    assert (test.target, test.min_memory_saving, test.max_slowdown, test.passes) == ("memory", 0.2, 2.0, recipe.passes)
    assert KeepTest.of(recipe, "latency").target == "latency"


def _comparison(speedup: float, ci: tuple[float, float]) -> Comparison:
    base = Measurement(samples=(1.0, 1.0, 1.0))
    return Comparison(base, base, speedup=speedup, speedup_ci=ci)


def test_verify_holds_a_lock_to_its_own_recorded_thresholds_not_the_defaults():
    lock = Lock("p.py", "ab" * 32, target="memory", min_speedup=1.1, min_memory_saving=0.3, max_slowdown=2.0)
    test = keep_test(lock)
    assert (test.target, test.min_speedup, test.min_memory_saving, test.max_slowdown) == ("memory", 1.1, 0.3, 2.0)
    # x0.80 saves 20%: enough for the default 5%, not for the 30% this lock was kept at.
    assert decide(KeepTest("memory"), 1.0, (0.95, 1.05), memory_ratio=0.8).kept
    found = recheck("onnx.runtime", test, _comparison(1.0, (0.95, 1.05)), 0.8)
    assert not found.pays and found.reason == "no longer pays: saves too little memory (x0.80, needs x0.70 or less)"
    # A lock's latency threshold too: 1.08x beyond noise passes 1.03, not the 1.1 recorded.
    latency = keep_test(Lock("p.py", "ab" * 32, target="latency", min_speedup=1.1))
    assert not recheck("compile", latency, _comparison(1.1, (1.08, 1.12)), None).pays
    slower = recheck("compile", latency, _comparison(0.8, (0.7, 0.9)), None)
    assert slower.reason == "no longer pays: slower than the plain pipeline"


def test_a_lock_older_than_the_memory_thresholds_reads_with_the_defaults():
    old = Lock("p.py", "ab" * 32, target="memory")
    data = old.to_dict()
    del data["min_memory_saving"], data["max_slowdown"]
    test = keep_test(Lock.from_dict(data))
    assert test.min_memory_saving == pytest.approx(DEFAULT_MIN_MEMORY_SAVING)
