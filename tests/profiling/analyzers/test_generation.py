"""generation: a decoder loop without a KV cache recomputes its prefix; a cached loop does not."""

from __future__ import annotations

import pytest

from accel.profiling.data import GenerationProfile, GenerationStep, ProfileData
from tests.profiling.analyzers.recorded import fake_machine, kinds, profile_hardware


@pytest.mark.slow
def test_decoder_without_kv_cache_is_generation(machine):
    report = profile_hardware("decoder_lm", machine)
    assert report.primary == "generation"
    finding = report.finding("generation")
    assert finding.evidence["slope_seconds_per_position"] > 0
    assert finding.evidence["fitted_last_step_seconds"] > 1.5 * finding.evidence["fitted_first_step_seconds"]
    assert finding.evidence["steps"] == 48
    assert 0 < finding.evidence["recompute_share"] < 1


def test_generation_on_recorded_slopes():
    steps = tuple(GenerationStep(position=p, seconds=0.001 * p) for p in range(8, 40))
    flat = tuple(GenerationStep(position=p, seconds=0.01) for p in range(8, 40))
    data = ProfileData(
        target="t",
        generation=GenerationProfile(steps=steps, total_seconds=sum(s.seconds for s in steps), parameter_bytes=10**6),
    )
    assert kinds(data, fake_machine())["generation"].evidence["recompute_share"] > 0.5
    data.generation = GenerationProfile(steps=flat, total_seconds=0.32, parameter_bytes=10**6)
    assert kinds(data, fake_machine())["generation"].impact == 0.0


def loop(prompt, new_tokens, cached, seconds):
    """A recorded generate loop: without a cache each call is fed the whole sequence again."""
    steps = []
    for i in range(new_tokens):
        position = prompt + i
        fed = (1 if i else prompt) if cached else position
        steps.append(
            GenerationStep(
                position=position,
                seconds=seconds(position),
                tokens=fed,
                recomputed_tokens=0 if cached or not i else position - 1,
            )
        )
    return tuple(steps)


def test_generation_counts_recomputed_tokens_and_uses_the_measured_cache_gain():
    # step latency flat (dispatch-bound small model): the slope alone would say "no recomputation"
    steps = loop(16, 32, cached=False, seconds=lambda p: 0.010 + 1e-5 * p)
    cached = loop(16, 32, cached=True, seconds=lambda p: 0.004)
    generation = GenerationProfile(
        steps=steps,
        total_seconds=0.34,
        parameter_bytes=10**6,
        cached_total_seconds=0.136,
        cached_steps=cached,
        cache_outputs_equal=True,
    )
    found = kinds(ProfileData(target="t", generation=generation), fake_machine())["generation"]
    assert found.evidence["recomputed_tokens"] == sum(range(16, 47))
    assert found.evidence["recomputed_token_share"] == pytest.approx(sum(range(16, 47)) / sum(range(16, 48)))
    assert found.impact == pytest.approx(0.6)  # 1 - 0.136 / 0.34, measured
    assert found.severity == "high"
    assert "recomputes the prefix" in found.summary and "saves 60% of the loop" in found.summary
    # the same loop with its cache on: nothing recomputed, nothing to save
    on = GenerationProfile(steps=cached, total_seconds=0.136, parameter_bytes=10**6)
    found = kinds(ProfileData(target="t", generation=on), fake_machine())["generation"]
    assert found.evidence["recomputed_tokens"] == 0 and found.impact == 0.0
    assert "no call recomputes" in found.summary
