"""The fidelity guard: each kind of corrupting candidate is caught THROUGH the engine (the real
engine, measurement and guard; planted candidates in tests/planted/opt_corrupt.py), and the
comparison itself on outputs built to fool a flattened cosine."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

import accel
from accel.core.errors import RecipeError
from accel.core.machine import describe_machine
from accel.optimizing.optimizers import OPTIMIZERS, Context
from accel.optimizing.recipes import parse_recipe
from accel.optimizing.recipes.schema import Guard
from accel.optimizing.search.engine import ACCEPTED, REVERTED, run_engine
from accel.optimizing.search.fidelity import compare_outputs, compare_samples
from tests.paths import PLANTED
from tests.planted import opt_guarded
from tests.planted.opt_corrupt import Faithful, FittedToCalibration, corrupting_optimizers

CORRUPTING = corrupting_optimizers()


@pytest.fixture(autouse=True)
def _planted_candidates():
    classes = [*CORRUPTING, Faithful, FittedToCalibration]
    for cls in classes:
        OPTIMIZERS.add(cls.name, cls())
    yield
    for cls in classes:
        OPTIMIZERS.remove(cls.name)


def _run(tmp_path, tries, pipeline=None, guard=None, target="latency"):
    data = {"name": "t", "target": target, "rules": [{"name": "planted", "try": list(tries)}]}
    if guard is not None:
        data["guard"] = guard
    context = Context(machine=describe_machine(), workdir=tmp_path)
    baseline = pipeline or accel.load(PLANTED / "opt_guarded.py")
    return run_engine(baseline, parse_recipe(data), context, budget_seconds=15)


def _step(result, name):
    return next(s for s in result.steps if s.optimizer == name)


# What each planted corruption must be rejected for, with the recipe's default guard.
EXPECTED = {
    "nan": "non-finite outputs",
    "inf": "non-finite outputs where the baseline is finite: batch 2 sample 3, output.boxes",
    "one_sample": "centered cosine",
    "label_flip": "exact outputs differ: batch 2 sample 3, output.label",
    "offset_logits": "centered cosine",
    "structure": "differ in structure",
    "small_zeroed": "output.boxes",
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_corrupting_candidate_is_rejected_through_the_engine(tmp_path, kind):
    result = _run(tmp_path, [f"test.corrupt.{kind}"])
    step = _step(result, f"test.corrupt.{kind}")
    assert step.verdict == REVERTED, step.reason
    assert EXPECTED[kind] in step.reason
    assert result.choices == ()


def test_the_faithful_candidate_passes_the_same_guard(tmp_path):
    result = _run(tmp_path, ["test.faithful"])
    step = _step(result, "test.faithful")
    assert step.verdict == ACCEPTED, step.reason
    assert step.fidelity["cosine"] == pytest.approx(1.0) and step.fidelity["top1_agreement"] == 1.0
    assert step.fidelity["samples"] == 4 * opt_guarded.BATCH_SIZE  # four batches, sample by sample


def test_top1_agreement_catches_labels_that_every_norm_misses(tmp_path):
    loose = {"min_cosine": 0.9, "max_relative_error": 0.5}
    step = _step(_run(tmp_path, ["test.corrupt.top1"], guard=loose), "test.corrupt.top1")
    assert step.verdict == REVERTED and "top-1 agreement 75.0%" in step.reason, step.reason


def test_the_metric_is_checked_in_addition_to_the_structure(tmp_path):
    metric_pipeline = opt_guarded.pipeline_with_metric()
    loose = {"min_cosine": 0.9, "max_relative_error": 0.5, "min_top1_agreement": None}
    step = _step(_run(tmp_path, ["test.corrupt.metric_drop"], metric_pipeline, loose), "test.corrupt.metric_drop")
    assert step.verdict == REVERTED and "metric dropped" in step.reason, step.reason
    # ...and a metric that does not move does not excuse broken outputs (it used to replace every check).
    step = _step(_run(tmp_path, ["test.corrupt.small_zeroed"], metric_pipeline), "test.corrupt.small_zeroed")
    assert step.fidelity["metric_drop"] == 0.0
    assert step.verdict == REVERTED and "output.boxes" in step.reason


def test_a_non_finite_metric_fails(tmp_path):
    pipeline = opt_guarded.pipeline().replace(metric=lambda results: float(results[0]["logits"].sum()))
    step = _step(_run(tmp_path, ["test.corrupt.nan"], pipeline), "test.corrupt.nan")
    assert step.verdict == REVERTED and "non-finite" in step.reason


def test_a_calibrated_candidate_is_validated_on_held_out_batches(tmp_path):
    step = _step(_run(tmp_path, ["test.fitted"]), "test.fitted")
    assert step.verdict == REVERTED and "batch 0" not in step.reason and "batch 1" not in step.reason, step.reason
    assert step.fidelity["samples"] == 4 * opt_guarded.BATCH_SIZE  # batches 2-5: after the two it fitted
    # With every batch of the source used for calibration there is nothing left to validate on.
    short = opt_guarded.pipeline().replace(source=opt_guarded.samples()[:16])
    step = _step(_run(tmp_path, ["test.fitted"], short), "test.fitted")
    assert step.verdict == REVERTED and "no held-out samples" in step.reason


def test_throughput_target_compares_every_result_of_run(tmp_path):
    step = _step(_run(tmp_path, ["test.corrupt.one_sample"], target="throughput"), "test.corrupt.one_sample")
    assert step.verdict == REVERTED and step.fidelity["samples"] == 4 * 8 + 64


# --- the comparison on outputs built to fool a flattened cosine ------------------------------------
def _logits(n=300, classes=10, offset=100.0, seed=0):
    return offset + torch.randn(n, classes, generator=torch.Generator().manual_seed(seed))


def _pairs(reference, candidate):
    return [(f"sample {i}", r, c) for i, (r, c) in enumerate(zip(reference, candidate))]


def test_one_broken_sample_in_300_fails_and_is_named():
    reference = _logits()
    candidate = reference.clone()
    candidate[137] = candidate[137].flip(0)
    flat = torch.nn.functional.cosine_similarity(reference.flatten(), candidate.flatten(), dim=0)
    assert flat > 0.9999  # what the old guard looked at
    fidelity = compare_samples(_pairs(reference, candidate))
    assert "sample 137" in fidelity.failure(Guard())


def test_all_nan_is_never_a_cosine_of_one():
    fidelity = compare_outputs(torch.ones(4, 3), torch.full((4, 3), float("nan")))
    assert "non-finite" in fidelity.failure(Guard())
    # NaN where the baseline has NaN too is the same output.
    same = torch.tensor([1.0, float("nan"), 3.0])
    assert compare_outputs(same, same.clone()).failure(Guard()) is None


def test_integer_and_bool_outputs_must_match_exactly():
    labels = torch.arange(10)
    changed = labels.clone()
    changed[3] = 4
    assert "1 of 10 values changed" in compare_outputs(labels, changed).failure(Guard())
    mask = torch.tensor([True, False])
    assert compare_outputs(mask, ~mask).failure(Guard()) is not None
    assert "is float" in compare_outputs(labels, labels.float()).failure(Guard())


def test_leaves_inside_dataclasses_and_model_outputs():
    @dataclasses.dataclass
    class Output:
        logits: torch.Tensor
        extra: tuple

    reference = Output(torch.randn(3, 5), (torch.ones(2), "tag"))
    damaged = Output(reference.logits.clone(), (torch.zeros(2), "tag"))
    assert "output.extra[0]" in compare_outputs(reference, damaged).failure(Guard())
    renamed = Output(reference.logits.clone(), (torch.ones(2), "other"))
    assert "output.extra[1]" in compare_outputs(reference, renamed).failure(Guard())


def test_bf16_output_of_the_same_values_passes():
    reference = torch.randn(8, 10, generator=torch.Generator().manual_seed(3))
    fidelity = compare_samples(_pairs(reference, reference.to(torch.bfloat16)))
    assert fidelity.failure(Guard()) is None and fidelity.relative_error < 0.01


def test_guard_keys_are_validated_and_unknown_keys_name_the_valid_ones():
    with pytest.raises(RecipeError) as info:
        parse_recipe({"name": "t", "guard": {"min_cosin": 0.9}, "rules": [{"name": "r", "try": ["compile"]}]})
    assert "unknown key 'min_cosin'" in info.value.message and "min_top1_agreement" in info.value.hint
    with pytest.raises(RecipeError, match="min_top1_agreement must lie in 0..1"):
        parse_recipe({"name": "t", "guard": {"min_top1_agreement": 2}, "rules": [{"name": "r", "try": ["compile"]}]})
    with pytest.raises(RecipeError, match="validation_batches must be >= 1"):
        parse_recipe({"name": "t", "guard": {"validation_batches": 0}, "rules": [{"name": "r", "try": ["compile"]}]})


def test_a_rules_guard_changes_only_the_keys_it_names():
    recipe = parse_recipe(
        {
            "name": "t",
            "guard": {"min_top1_agreement": 0.95, "validation_batches": 2},
            "rules": [{"name": "r", "try": ["compile"], "guard": {"min_cosine": 0.99}}],
        }
    )
    guard = recipe.rules[0].guard
    assert guard.min_cosine == 0.99 and guard.min_top1_agreement == 0.95 and guard.validation_batches == 2


def test_relative_error_judges_single_number_outputs():
    reference = [np.float64(10.0), np.float64(5.0)]
    candidate = [np.float64(10.0), np.float64(6.0)]
    fidelity = compare_samples(_pairs(reference, candidate))
    assert fidelity.relative_error == pytest.approx(0.2)
    assert "relative error" in fidelity.failure(Guard())


def test_onnx_int8_static_is_validated_after_its_calibration_batches(tmp_path):
    """The real optimizer: calibrated on the first batch, validated on the next four; calibrated on
    all eight batches (its default), nothing is left to validate on and the guard says so."""
    one = _run(tmp_path, [{"optimizer": "onnx.int8_static", "params": {"calibration_batches": 1}}])
    step = _step(one, "onnx.int8_static")
    assert step.fidelity is not None and step.fidelity["note"] is None, step.reason
    assert step.fidelity["samples"] == 4 * opt_guarded.BATCH_SIZE  # batches 1-4
    every = _step(_run(tmp_path, ["onnx.int8_static"]), "onnx.int8_static")
    assert every.verdict == REVERTED and "calibrated on all 8 batches" in every.reason, every.reason


@pytest.mark.parametrize("output", [None, "a label", float("nan"), torch.full((2, 3), float("nan"))])
def test_outputs_with_no_number_are_never_a_cosine_of_one(output):
    fidelity = compare_outputs(output, output)
    assert math.isnan(fidelity.cosine)
    assert "no number to compare" in fidelity.failure(Guard())


@pytest.mark.parametrize(
    "output, said",
    [
        (None, "None"),
        ("text", "a string ('text')"),
        (torch.full((2, 3), float("nan")), "only NaN/inf values"),
        ((torch.full((2,), float("inf")), {"b": torch.full((1,), float("nan"))}), "only NaN/inf values"),
        (torch.empty(0, 3), "an empty tensor"),
        ((), "an empty structure"),
    ],
)
def test_an_output_without_a_number_to_compare_is_named(output, said):
    from accel.optimizing.search.fidelity import without_numbers

    assert without_numbers(output) == said


@pytest.mark.parametrize(
    "output",
    [
        torch.ones(2, 3),
        torch.tensor([1.0, float("nan")]),
        torch.tensor([1, 2]),
        ["generated text"],
        {"a": None, "b": 1.0},
    ],
)
def test_an_output_with_something_to_compare_passes(output):
    from accel.optimizing.search.fidelity import without_numbers

    assert without_numbers(output) is None


def test_the_guard_refuses_a_model_that_returns_none_before_any_candidate():
    from accel.core.errors import PipelineError
    from accel.optimizing.search.validation import Validator

    class ReturnsNone(torch.nn.Module):
        def forward(self, x):
            x * 2  # noqa: B018 - the missing return is the bug under test

    pipeline = accel.Pipeline(model=ReturnsNone(), inputs=(torch.ones(2, 4),))
    with pytest.raises(PipelineError, match="the model returned None"):
        Validator(pipeline, per_sample_results=False)
    assert Validator(accel.Pipeline(model=torch.nn.Linear(4, 2), inputs=(torch.ones(2, 4),)), per_sample_results=False)


def test_a_real_berts_pooler_output_is_features_not_class_scores():
    """BERT at batch 1 returns a 768-value pooler_output per sample: within MAX_CLASSES, but features.
    An int8 rounding that keeps the cosine at 0.9995 flipped its argmax in every sample, and the
    guard reverted ORT int8 on "top-1 agreement 0%" (the held-out BERT-base, latency recipe)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    model = BertModel(config).eval()
    ids = torch.randint(1, config.vocab_size, (1, 16))
    with torch.no_grad():
        reference = model(input_ids=ids)
        candidate = model(input_ids=ids)
    candidate.pooler_output[0] = reference.pooler_output[0].roll(1)  # argmax moved, a feature vector still
    fidelity = compare_outputs(reference, candidate)
    assert fidelity.top1_agreement is None, fidelity.top1_at
    # A classifier's logits of the same size are still class scores.
    logits = torch.randn(1, 768)
    assert compare_outputs({"logits": logits}, {"logits": logits.roll(1, -1)}).top1_agreement == 0.0
