"""Hardware findings on planted pipelines, measured for real, and the analyzers on recorded data."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import accel
from accel.core.counts import OpCount
from accel.core.machine import describe_machine
from accel.profiling.analyzers import analyze
from accel.profiling.costmodel import CostModel, OpCost
from accel.profiling.data import (
    DtypeTiming,
    GenerationProfile,
    GenerationStep,
    LayerActivation,
    MemoryProfile,
    PatchCandidatePlan,
    PatchPlan,
    ProfileData,
)
from accel.profiling.generation import cached_length, call_tokens, recomputed_tokens

PLANTED = Path(__file__).parent / "planted"
HARDWARE_KINDS = ("memory_bandwidth", "compute_bound", "overhead", "memory_peak", "generation")


def profile(name, machine):
    return accel.profile(PLANTED / f"hw_{name}.py", machine=machine, budget_seconds=3.0)


def fake_machine(bandwidth_gbs=20.0, gflops=200.0, **by_dtype):
    import dataclasses

    return dataclasses.replace(
        describe_machine("cpu"),
        peak_bandwidth_gbs=bandwidth_gbs,
        peak_gflops=gflops,
        peak_gflops_by_dtype={"fp32": gflops, **by_dtype},
        calibrated=True,
    )


# --- planted pipelines, measured --------------------------------------------------------------


@pytest.mark.slow
def test_batch1_wide_mlp_is_memory_bandwidth(machine):
    report = profile("wide_mlp", machine)
    assert report.primary == "memory_bandwidth"
    finding = report.finding("memory_bandwidth")
    assert finding.evidence["weight_bytes_per_call"] > 0.9 * finding.evidence["bytes_per_call"]
    assert "quantize.int8_dynamic" in finding.recommendations
    assert report.finding("compute_bound") is None
    layers = {layer["name"] for layer in report.to_dict()["layers"]}
    assert {"0", "2", "4"} <= layers
    # the hardware sections survive the JSON round trip
    from accel.core.io import json_default
    from accel.profiling.report import Report

    again = Report.from_dict(json.loads(json.dumps(report.to_dict(), default=json_default)))
    assert again.extra["cost"]["op_count"] == report.extra["cost"]["op_count"] and again.primary == report.primary


@pytest.mark.slow
def test_large_batch_conv_net_is_compute_bound_not_memory_bandwidth(machine):
    report = profile("conv_net", machine)
    compute = report.finding("compute_bound")
    assert compute is not None
    memory = report.finding("memory_bandwidth")
    assert memory is None or memory.impact < compute.impact
    faster = compute.evidence["faster_units_speedup"]
    if faster:  # this device has faster units (bf16 AMX/AVX512-BF16): the cure is worth a medium or more
        assert report.primary == "compute_bound"
        assert compute.recommendations[0] in ("precision.bf16", "precision.fp16", "quantize.int8_dynamic")
    else:
        assert compute.severity == "low"


def test_many_tiny_ops_are_overhead(machine):
    report = profile("tiny_ops", machine)
    assert report.primary == "overhead"
    finding = report.finding("overhead")
    assert finding.evidence["op_count_per_call"] >= 200
    assert finding.evidence["median_op_seconds"] > 4 * finding.evidence["median_op_roofline_seconds"]
    assert "onnx.runtime" in finding.recommendations


@pytest.mark.slow
def test_highres_cnn_has_memory_peak_with_predicted_reduction(machine):
    report = profile("highres_cnn", machine)
    finding = report.finding("memory_peak")
    assert finding is not None
    assert finding.evidence["predicted_reduction"] >= 2.0
    assert finding.evidence["leading_working_bytes"] > 4 * finding.evidence["later_working_bytes"]
    assert finding.evidence["peak_bytes"] > 0
    assert report.to_dict()["memory"]["layers"][0]["name"] == "0"


@pytest.mark.slow
def test_decoder_without_kv_cache_is_generation(machine):
    report = profile("decoder_lm", machine)
    assert report.primary == "generation"
    finding = report.finding("generation")
    assert finding.evidence["slope_seconds_per_position"] > 0
    assert finding.evidence["fitted_last_step_seconds"] > 1.5 * finding.evidence["fitted_first_step_seconds"]
    assert finding.evidence["steps"] == 48
    assert 0 < finding.evidence["recompute_share"] < 1


# --- analyzers on recorded measurements -------------------------------------------------------


def cost(*ops, call_seconds=None):
    ops = tuple(ops)
    return CostModel(
        ops=ops, call_seconds=call_seconds or sum(o.seconds for o in ops), peak_bandwidth_gbs=20.0, peak_gflops=200.0
    )


def op(name="aten::addmm", flops=0, bytes_moved=0, weight_bytes=0, seconds=0.0, machine=None, dtype="float32"):
    machine = machine or fake_machine()
    from accel.profiling.costmodel import roofline_seconds

    ridge = machine.peak_gflops / machine.peak_bandwidth_gbs
    count = OpCount(
        op=name,
        module="layer",
        flops=flops,
        bytes_read=bytes_moved,
        bytes_written=0,
        weight_bytes=weight_bytes,
        dtype=dtype,
    )
    return OpCost(
        count=count,
        seconds=seconds,
        roofline_seconds=roofline_seconds(flops, bytes_moved, machine.peak_gflops, machine.peak_bandwidth_gbs),
        memory_bound=(flops / bytes_moved if bytes_moved else 0) < ridge,
    )


def kinds(data, machine):
    return {f.kind: f for f in analyze(data, machine, names=list(HARDWARE_KINDS))}


def test_streaming_weights_near_peak_is_memory_bandwidth_with_int8_saving():
    machine = fake_machine()
    data = ProfileData(
        target="t", ops=cost(op(flops=2 * 10**8, bytes_moved=4 * 10**8, weight_bytes=4 * 10**8, seconds=0.025))
    )
    found = kinds(data, machine)
    assert set(found) == {"memory_bandwidth"}
    assert found["memory_bandwidth"].impact == pytest.approx(0.75, rel=0.01)  # 3/4 of fp32 weight bytes


def test_memory_bound_ops_far_below_peak_bandwidth_are_not_called_bandwidth_bound():
    data = ProfileData(target="t", ops=cost(op(flops=10**6, bytes_moved=10**7, seconds=0.1)))
    assert "memory_bandwidth" not in kinds(data, fake_machine())


def test_compute_bound_severity_follows_faster_units():
    conv = dict(name="aten::convolution", flops=10**10, bytes_moved=10**7, seconds=0.1)
    without = kinds(ProfileData(target="t", ops=cost(op(**conv))), fake_machine(fp16=2.0))["compute_bound"]
    assert without.severity == "low" and without.recommendations == ["batch.size"]
    faster = fake_machine(bf16=600.0, int8=800.0)
    found = kinds(ProfileData(target="t", ops=cost(op(machine=faster, **conv))), faster)["compute_bound"]
    assert found.recommendations == ["precision.bf16"]  # int8 dynamic quantization covers Linear only
    assert found.impact == pytest.approx(1 - 1 / 3, rel=0.01)
    onnx = ProfileData(target="t", mode="onnx", ops=cost(op(machine=faster, **conv)))
    assert kinds(onnx, faster)["compute_bound"].severity == "low"  # no bf16 cure inside ONNX Runtime


def test_model_near_its_roofline_with_nothing_to_cure_gets_no_finding_above_low():
    machine = fake_machine()
    data = ProfileData(target="t", ops=cost(op(name="aten::mm", flops=2 * 10**10, bytes_moved=10**7, seconds=0.1)))
    assert all(f.severity in ("low", "info") for f in analyze(data, machine, names=list(HARDWARE_KINDS)))


LAYERS = (
    LayerActivation("conv1", 2_000_000, 16_000_000, (1, 3, 256, 256)),
    LayerActivation("pool", 16_000_000, 1_000_000, (1, 16, 256, 256)),
    LayerActivation("conv2", 1_000_000, 500_000, (1, 16, 64, 64)),
    LayerActivation("fc", 1000, 40, (1, 64)),
)


def memory(plan=None, reason=None, peak_bytes=20_000_000, device_memory_bytes=10**10):
    return MemoryProfile(
        peak_bytes=peak_bytes,
        parameter_bytes=10_000,
        layers=LAYERS,
        device_memory_bytes=device_memory_bytes,
        patch_plan=plan,
        no_patch_plan_reason=reason,
    )


def test_memory_peak_predicts_with_the_plan_it_was_given():
    candidates = (
        PatchCandidatePlan(prefix_layers=2, grid=2, predicted_peak_bytes=6_000_000, halo_extra_compute_share=0.01),
        PatchCandidatePlan(prefix_layers=2, grid=4, predicted_peak_bytes=2_500_000, halo_extra_compute_share=0.03),
    )
    plan = PatchPlan(
        module="",
        stage_layers=4,
        local_layers=2,
        stop_reason="layer 3 (Linear mixes all features of its input: not spatially local)",
        first_layer=0,
        unpatched_peak_bytes=18_000_000,
        candidates=candidates,
    )
    found = kinds(ProfileData(target="t", memory=memory(plan)), fake_machine())["memory_peak"]
    # the best candidate (4x4) against the planner's unpatched estimate: 18 / 2.5 = 7.2x, not capped
    assert found.evidence["predicted_reduction"] == pytest.approx(7.2)
    assert found.evidence["predicted_peak_bytes"] == int(20_000_000 / 7.2)
    assert (found.evidence["leading_layers"], found.evidence["grid"]) == (2, 4)
    assert found.recommendations == ["patch.inference"]
    assert "the first 2 of the model's 4 layers" in found.summary and "7.2x" in found.summary
    # a plan whose best candidate cuts less than 2x, or no plan at all: nothing to name
    weak = dataclasses.replace(plan, candidates=(dataclasses.replace(candidates[1], predicted_peak_bytes=10**7),))
    assert "memory_peak" not in kinds(ProfileData(target="t", memory=memory(weak)), fake_machine())
    unplanned = memory(reason="Net is neither an nn.Sequential nor has an nn.Sequential child")
    assert "memory_peak" not in kinds(ProfileData(target="t", memory=unplanned), fake_machine())
    # near the device's memory it is named without a plan, and without a cure
    full = memory(reason="no Sequential", device_memory_bytes=21_000_000)
    near = kinds(ProfileData(target="t", memory=full), fake_machine())["memory_peak"]
    assert near.severity == "medium" and near.recommendations == []


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


def test_token_prefix_comparison():
    ids = torch.arange(10).reshape(1, 10)
    # no cache: the next call is fed the same 10 tokens and one more
    assert recomputed_tokens(torch.arange(11).reshape(1, 11), 0, (ids, 0)) == 10
    # a cache: fed one token after the 10 cached ones, even if it repeats the last token
    assert recomputed_tokens(torch.tensor([[9]]), 10, (torch.tensor([[9]]), 9)) == 0
    # a different prompt in the same position is not a recomputation
    assert recomputed_tokens(torch.arange(1, 12).reshape(1, 11), 0, (ids, 0)) == 0
    # a prefix that diverges after 4 tokens
    diverged = torch.cat([ids[:, :4], torch.full((1, 6), 99)], dim=1)
    assert recomputed_tokens(diverged, 0, (ids, 0)) == 4
    assert recomputed_tokens(ids, 0, None) == 0


def test_hf_keyword_calls_are_read():
    class Cache:
        def get_seq_length(self):
            return 12

    ids = torch.ones(2, 1, dtype=torch.long)
    assert call_tokens((), {"input_ids": ids, "past_key_values": Cache()}) is ids
    decoder = torch.ones(2, 3, dtype=torch.long)
    assert call_tokens((), {"input_ids": ids, "decoder_input_ids": decoder}) is decoder
    assert call_tokens((torch.randn(2, 4), ids), {}) is ids
    assert cached_length({"past_key_values": Cache()}) == 12
    assert cached_length({"past_key_values": ((torch.zeros(1, 2, 7, 4), torch.zeros(1, 2, 7, 4)),)}) == 7
    assert cached_length({}) == 0


def test_compute_bound_predicts_from_the_measured_call_not_the_peak_ratio():
    conv = dict(name="aten::convolution", flops=10**10, bytes_moved=10**7, seconds=0.1)
    amx = fake_machine(bf16=960.0)  # bf16 GEMMs calibrate at 4.8x fp32
    guessed = kinds(ProfileData(target="t", ops=cost(op(machine=amx, **conv))), amx)["compute_bound"]
    assert guessed.impact == pytest.approx(1 - 1 / 4.0)  # the capped peak ratio: the old prediction
    assert guessed.evidence["prediction"] == {"bf16": "calibrated GEMM peak ratio"}
    timed = (DtypeTiming("fp32", 0.1), DtypeTiming("bf16", 0.1 / 1.3))
    data = ProfileData(target="t", ops=cost(op(machine=amx, **conv)), dtype_timings=timed)
    found = kinds(data, amx)["compute_bound"]
    assert found.evidence["measured_layer_speedup"]["bf16"] == pytest.approx(1.3)
    assert found.impact == pytest.approx(1 - 1 / 1.3)
    assert found.evidence["predicted_saving"] == {"precision.bf16": pytest.approx(1 - 1 / 1.3)}
    assert "1.3x faster in bf16" in found.summary and "peak ratio says 4.8x" in found.summary
    # a dtype that measured no faster is no cure, whatever the calibration says
    slow = (DtypeTiming("fp32", 0.1), DtypeTiming("bf16", 0.105))
    data = ProfileData(target="t", ops=cost(op(machine=amx, **conv)), dtype_timings=slow)
    found = kinds(data, amx)["compute_bound"]
    assert found.severity == "low" and found.recommendations == ["batch.size"]


@pytest.mark.gpu
def test_wide_mlp_on_cuda_is_memory_bandwidth():
    import torch

    from accel.core.calibration import calibrated_machine
    from accel.core.machine import describe_machine

    machine = calibrated_machine(describe_machine("cuda"), quick=True)
    pipeline = accel.load(PLANTED / "hw_wide_mlp.py")
    pipeline = pipeline.replace(model=pipeline.model.cuda(), inputs=tuple(t.cuda() for t in pipeline.inputs))
    report = accel.profile(pipeline, machine=machine, budget_seconds=3.0)
    assert report.finding("memory_bandwidth") is not None
    assert torch.cuda.max_memory_allocated() > 0


@pytest.mark.parametrize("use_cache", [False, True])
def test_generation_pass_on_a_tiny_transformers_decoder(use_cache):
    """transformers' generate() calls the model with keywords; the pass reads them, counts what each
    call recomputed, and (without a cache) times the loop again with use_cache=True forced."""
    transformers = pytest.importorskip("transformers")
    from accel.core.machine import describe_machine
    from accel.profiling.generation import generation_pass

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_embd=32, n_layer=1, n_head=2, vocab_size=64, n_positions=64, bos_token_id=0, eos_token_id=None
    )
    model = transformers.GPT2LMHeadModel(config).eval()

    def generate(model, ids):
        return model.generate(ids, max_new_tokens=4, do_sample=False, use_cache=use_cache, pad_token_id=0)

    pipeline = accel.Pipeline(model=model, inputs=(torch.zeros(2, 6, dtype=torch.long),), generate=generate)
    generation = generation_pass(pipeline, pipeline.inputs, describe_machine("cpu"))
    assert [s.position for s in generation.steps] == [6, 7, 8, 9]
    assert generation.batch_size == 2 and "generate" not in model.__dict__  # the model is restored
    if use_cache:
        assert [s.tokens for s in generation.steps] == [6, 1, 1, 1]
        assert generation.recomputed_tokens == 0 and generation.cached_total_seconds is None
    else:
        assert [s.tokens for s in generation.steps] == [6, 7, 8, 9]
        assert [s.recomputed_tokens for s in generation.steps] == [0, 6, 7, 8]
        assert generation.recomputed_tokens == 2 * 21 and generation.computed_tokens == 2 * 30
        assert generation.cached_total_seconds is not None and generation.cache_outputs_equal is True
        assert [s.tokens for s in generation.cached_steps] == [6, 1, 1, 1]
