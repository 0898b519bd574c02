"""Findings whose sentence must agree with the numbers beside it (issues 25 and 26): each one is
rendered from recorded measurements of the shape that produced the contradiction."""

from __future__ import annotations

from accel.profiling.analyzers import analyze
from accel.profiling.data import GenerationProfile, GenerationStep, ProfileData
from tests.profiling.analyzers.recorded import cost, fake_machine, kinds, loader_machine, op, recorded


def _generation(first_ms: float, last_ms: float) -> ProfileData:
    positions = range(8, 40)
    step = (last_ms - first_ms) / (len(positions) - 1) / 1e3
    steps = tuple(GenerationStep(position=p, seconds=first_ms / 1e3 + step * (p - 8)) for p in positions)
    return ProfileData(
        target="t",
        generation=GenerationProfile(steps=steps, total_seconds=sum(s.seconds for s in steps), parameter_bytes=10**6),
    )


def test_a_45_percent_rise_in_step_latency_is_said_to_rise_not_stay_flat():
    summary = kinds(_generation(22.85, 33.13), fake_machine())["generation"].summary
    assert "step latency rises 45% from 22.85 ms to 33.13 ms" in summary, summary
    assert "stays flat" not in summary


def test_a_flat_loop_still_says_flat():
    summary = kinds(_generation(10.0, 10.2), fake_machine())["generation"].summary
    assert "step latency stays flat from 10.00 ms to 10.20 ms" in summary, summary


def test_a_loader_that_keeps_up_is_not_said_to_limit_while_the_model_limits():
    # 1 ms of transform, 8 ms of model, no workers: the loader is faster yet runs in line
    (finding,) = analyze(recorded(0.0, 1.0, 8.0), loader_machine(4), ["data_loading"])
    assert "model limits throughput" not in finding.summary
    assert "runs in line (num_workers=0)" in finding.summary, finding.summary
    # a loader that is slower than the model is still named
    (finding,) = analyze(recorded(0.0, 8.0, 2.0), loader_machine(4), ["data_loading"])
    assert "so transform limits throughput" in finding.summary, finding.summary


def test_int8_is_not_recommended_when_it_would_cut_almost_none_of_the_bytes():
    # 1% of the bytes moved are weights: int8 would cut 0.75% of them
    ops = cost(op(flops=2 * 10**8, bytes_moved=4 * 10**8, weight_bytes=4 * 10**6, seconds=0.025))
    finding = kinds(ProfileData(target="t", ops=ops), fake_machine())["memory_bandwidth"]
    assert "cut 0%" not in finding.summary
    assert "too little to recommend" in finding.summary, finding.summary
    assert not {"quantize.int8_dynamic", "onnx.int8_dynamic"} & set(finding.recommendations)
