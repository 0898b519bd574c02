"""Batching optimizers: batch.size picks the plateau's smallest size; batch.bucket cuts padding and
keeps results in source order, agreeing per sample with the unbucketed run."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import accel
from accel.core.machine import describe_machine
from accel.optimizing.optimizers import OPTIMIZERS, Context, make_config
from accel.optimizing.optimizers.batch import BatchSizeConfig, BucketPlan, SizePoint, choose_batch_size
from accel.optimizing.recipes import parse_recipe
from accel.optimizing.search.engine import ACCEPTED, run_engine
from accel.optimizing.search.fidelity import compare_outputs
from tests.paths import PLANTED, REAL


def _context(tmp_path):
    return Context(machine=describe_machine(), workdir=tmp_path)


def test_smallest_size_on_the_plateau():
    points = [
        SizePoint(1, 100, 0.01),
        SizePoint(2, 180, 0.011),
        SizePoint(4, 300, 0.013),
        SizePoint(8, 390, 0.02),
        SizePoint(16, 400, 0.04),
        SizePoint(32, 398, 0.08),
    ]
    assert choose_batch_size(points, BatchSizeConfig())[0] == 8
    assert choose_batch_size(points, BatchSizeConfig(plateau_tolerance=0.0))[0] == 16
    assert choose_batch_size(points, BatchSizeConfig(latency_limit_seconds=0.015))[0] == 4


def test_memory_limit_and_nothing_fits():
    points = [SizePoint(1, 100, 0.01, peak_bytes=10), SizePoint(2, 190, 0.01, peak_bytes=30)]
    assert choose_batch_size(points, BatchSizeConfig(memory_limit_bytes=20))[0] == 1
    chosen, why = choose_batch_size(points, BatchSizeConfig(memory_limit_bytes=5))
    assert chosen is None and "limits" in why


def test_batch_size_scan_leaves_batch_one_when_overhead_dominates(tmp_path):
    # A per-call fixed cost (dead matmuls) dominates: bigger batches amortize it.
    pipeline = accel.load(PLANTED / "opt_dead_work.py").replace(batch_size=1)
    optimizer = OPTIMIZERS.get("batch.size")
    applied = optimizer.apply(pipeline, make_config(optimizer, {"max_batch_size": 16}), _context(tmp_path))
    assert applied.pipeline.batch_size > 2
    assert [p["batch_size"] for p in applied.state["scan"]] == [1, 2, 4, 8, 16]
    assert compare_outputs(pipeline.run(), applied.pipeline.run()).max_abs_error < 1e-5


def test_bucket_keeps_source_order_and_agrees_per_sample(tmp_path):
    pipeline = accel.load(PLANTED / "opt_padded_sequences.py")
    optimizer = OPTIMIZERS.get("batch.bucket")
    assert optimizer.applicable(pipeline, _context(tmp_path)) is None
    applied = optimizer.apply(pipeline, make_config(optimizer, {}), _context(tmp_path))
    plan = applied.pipeline.batch_indices()
    assert plan != pipeline.batch_indices()
    assert sorted(i for batch in plan for i in batch) == list(range(len(pipeline.source)))
    expected, got = pipeline.run(), applied.pipeline.run()
    assert len(got) == len(expected)
    for a, b in zip(expected, got):
        assert torch.allclose(a, b, atol=1e-4)


def test_bucket_not_applicable_without_varying_lengths(tmp_path):
    pipeline = accel.load(PLANTED / "opt_dead_work.py")
    assert "same length" in OPTIMIZERS.get("batch.bucket").applicable(pipeline, _context(tmp_path))
    single = pipeline.replace(batch_size=1)
    assert "batch_size is 1" in OPTIMIZERS.get("batch.bucket").applicable(single, _context(tmp_path))


@pytest.mark.slow
def test_engine_keeps_bucketing_on_a_padded_stream(tmp_path):
    recipe = parse_recipe({"name": "t", "target": "throughput", "rules": [{"name": "b", "try": ["batch.bucket"]}]})
    result = run_engine(accel.load(PLANTED / "opt_padded_sequences.py"), recipe, _context(tmp_path), budget_seconds=60)
    step = result.steps[0]
    assert step.verdict == ACCEPTED, step.reason
    assert step.speedup > 1.5  # planted: ~3x less padded work
    assert result.speedup_ci[0] > 1.03


def _bert_padded():
    """The real-model corpus's BERT encoder: HF dict batches with attention_mask, no postprocess."""
    spec = importlib.util.spec_from_file_location("real_bert_padded", REAL / "bert_padded.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.pipeline().replace(source=module.make_sequences(32), batch_size=8)


@pytest.mark.slow
def test_bucketing_plain_padded_hf_code_keeps_outputs_and_passes_the_guard(tmp_path):
    """No postprocess: each sample's output would keep its batch's padded length; run() trims it to
    the sample's real tokens, so bucketed and unbucketed results agree and the guard compares them."""
    pipeline = _bert_padded()
    bucketed = (
        OPTIMIZERS.get("batch.bucket")
        .apply(pipeline, make_config(OPTIMIZERS.get("batch.bucket"), {}), _context(tmp_path))
        .pipeline
    )
    expected, got = pipeline.run(), bucketed.run()
    assert [r["last_hidden_state"].shape[0] for r in got] == [len(s) for s in pipeline.source]
    fidelity = compare_outputs(expected, got)
    assert fidelity.shape_error is None and fidelity.max_abs_error < 1e-4
    recipe = parse_recipe({"name": "t", "target": "throughput", "rules": [{"name": "b", "try": ["batch.bucket"]}]})
    step = run_engine(pipeline, recipe, _context(tmp_path), budget_seconds=60).steps[0]
    assert step.fidelity is not None, step.reason
    assert step.fidelity["shape_error"] is None and step.fidelity["cosine"] >= 0.999, step.reason
    assert "structure" not in step.reason


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 50), min_size=1, max_size=60), batch_size=st.integers(1, 9))
def test_bucket_plan_is_a_partition_sorted_by_length(lengths, batch_size):
    pipeline = accel.Pipeline(model=lambda x: x, source=[[0] * n for n in lengths], batch_size=batch_size)
    plan = BucketPlan("raw")(pipeline)
    flat = [i for batch in plan for i in batch]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(1 <= len(batch) <= batch_size for batch in plan)
    assert [lengths[i] for i in flat] == sorted(lengths)
