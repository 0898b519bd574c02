"""The engine's decisions on planted cases, with test-only optimizers registered for the test and
removed after. The engine, measurement and guard are the real ones."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest
import torch

import accel
from accel.core.machine import describe_machine
from accel.optimizing.optimizers import OPTIMIZERS, Applied, Context, Optimizer
from accel.optimizing.recipes import parse_recipe
from accel.optimizing.search.engine import ACCEPTED, NOT_APPLICABLE, REVERTED, SKIPPED, run_engine
from tests.paths import PLANTED


class _FlagOptimizer(Optimizer):
    """Rebuilds the planted DeadWorkModel with some flags changed."""

    flags: ClassVar[dict] = {}

    def apply(self, pipeline, config, context):
        return Applied(pipeline=pipeline.replace(model=pipeline.model.variant(**self.flags)))


class SkipA(_FlagOptimizer):
    name, slot, flags = "test.skip_a", "test-a", {"dead_a": False}


class SkipB(_FlagOptimizer):
    name, slot, flags = "test.skip_b", "test-b", {"dead_b": False}


class SlowDown(_FlagOptimizer):
    name, slot, flags = "test.slow", "test-slow", {"extra": 120}


class FastButWrong(Optimizer):
    """Much faster, because it skips the model: outputs are zeros."""

    name, slot = "test.wrong", "test-wrong"

    def apply(self, pipeline, config, context):
        def zeros(x):
            return torch.zeros(x.shape[0], 8)

        return Applied(pipeline=pipeline.replace(model=zeros))


class ClashesWithA(Optimizer):
    """Faster alone (drops dead work B), but with dead work A already gone it adds far more."""

    name, slot = "test.clash", "test-clash"

    def apply(self, pipeline, config, context):
        model = pipeline.model
        extra = 80 if not model.dead_a else 0
        return Applied(pipeline=pipeline.replace(model=model.variant(dead_b=False, extra=extra)))


# Set by the progress callback when the engine starts re-measuring the final composition.
FINAL_STARTED = {"on": False}


class FastUntilTheFinal(Optimizer):
    """Drops dead work A (about 7x faster) while it is tried, and is much slower than the baseline
    once the engine re-measures the final composition: what a candidate whose gain was noise looks
    like to that last check."""

    name, slot = "test.fast_until_final", "test-final"
    drops: ClassVar[dict] = {"dead_a": False}

    def apply(self, pipeline, config, context):
        fast, slow = pipeline.model.variant(**self.drops), pipeline.model.variant(extra=120)

        def model(x):
            return (slow if FINAL_STARTED["on"] else fast)(x)

        return Applied(pipeline=pipeline.replace(model=model))


class FastUntilTheFinalB(FastUntilTheFinal):
    """The same, dropping dead work B: a win on top of SkipA until the final re-measure."""

    name, slot, drops = "test.fast_until_final_b", "test-final-b", {"dead_b": False}


class SkipBOnTopOfA(_FlagOptimizer):
    """Drops dead work B and half of A's matmuls (2.3x: B alone is 1.17x, which a loaded machine's
    interval can reach down to the keep threshold from), and works only on a model that still has
    dead work A (as channels-last convolutions need a torch model with convolutions): applied to
    any other, it breaks."""

    name, slot, flags = "test.skip_b_needs_a", "test-b", {"dead_b": False, "extra": -12}  # of DEAD_A_CALLS = 24

    def applicable(self, pipeline, context):
        return None if pipeline.model.dead_a else "the model has no dead work A"

    def apply(self, pipeline, config, context):
        if not pipeline.model.dead_a:
            raise TypeError("cannot apply to a model without dead work A")
        return super().apply(pipeline, config, context)


class ReplacesTheModel(_FlagOptimizer):
    """A model-slot replacement that drops both pieces of dead work (as a runtime swap would)."""

    name, slot, flags = "test.replace", "model", {"dead_a": False, "dead_b": False}


class NeverApplies(Optimizer):
    name = "test.never"

    def applicable(self, pipeline, context):
        return "planted: never applies"

    def apply(self, pipeline, config, context):
        raise AssertionError("apply must not be called when applicable() says no")


TEST_OPTIMIZERS = (
    SkipA,
    SkipB,
    SlowDown,
    FastButWrong,
    ClashesWithA,
    FastUntilTheFinal,
    FastUntilTheFinalB,
    SkipBOnTopOfA,
    ReplacesTheModel,
    NeverApplies,
)


@pytest.fixture(autouse=True)
def _test_optimizers(monkeypatch):
    # The baseline's per-call time the engine predicts trial costs from, planted at 1 ms: these
    # tests are about decisions, and on a loaded machine a measured one would skip candidates for
    # budget (tests/optimizing/test_budget_and_order.py tests that).
    from accel.core.measure import Measurement
    from accel.optimizing.search.engine import Search

    monkeypatch.setattr(Search, "_time_baseline", lambda self: Measurement((0.001, 0.001, 0.001)))
    # One intra-op thread: on a busy 2-core machine a second thread stalls every OpenMP region for a
    # scheduler tick, calls vary tenfold, and even the 7x planted win is 'too noisy to decide'
    # (load 11-13). The decisions tested here do not depend on threads (conftest restores them).
    torch.set_num_threads(1)
    for cls in TEST_OPTIMIZERS:
        OPTIMIZERS.add(cls.name, cls())
    yield
    for cls in TEST_OPTIMIZERS:
        OPTIMIZERS.remove(cls.name)


def _run(tmp_path, tries, target="latency", **recipe):
    data = {"name": "t", "target": target, "rules": [{"name": "planted", "try": list(tries)}], **recipe}
    context = Context(machine=describe_machine(), workdir=tmp_path)
    return run_engine(accel.load(PLANTED / "opt_dead_work.py"), parse_recipe(data), context, budget_seconds=20)


def _step(result, name):
    return next(s for s in result.steps if s.optimizer == name)


def test_slower_candidate_is_reverted(tmp_path):
    result = _run(tmp_path, ["test.slow"])
    step = _step(result, "test.slow")
    assert step.verdict == REVERTED and step.reason.startswith("slower"), step.reason  # (a slot cut says so)
    assert step.speedup < 0.5
    assert result.choices == () and "lock is empty" in result.message
    assert result.pipeline.model.extra == 0
    assert result.speedup == 1.0


def test_faster_but_wrong_candidate_is_reverted_by_the_guard(tmp_path):
    result = _run(tmp_path, ["test.wrong"])
    step = _step(result, "test.wrong")
    assert step.speedup > 3  # it was faster...
    assert step.verdict == REVERTED and "cosine" in step.reason  # ...but broke the outputs
    assert result.choices == ()


def test_faithful_faster_candidates_are_kept_and_composed(tmp_path):
    result = _run(tmp_path, ["test.skip_a", "test.skip_b"])
    a, b = _step(result, "test.skip_a"), _step(result, "test.skip_b")
    assert a.verdict == ACCEPTED and b.verdict == ACCEPTED
    assert b.composed_with == ("test.skip_a",)  # measured on top of A, against the best so far
    assert [c.optimizer for c in result.choices] == ["test.skip_a", "test.skip_b"]
    model = result.pipeline.model
    assert not model.dead_a and not model.dead_b
    assert result.speedup > 3 and result.speedup_ci[0] > 1.03
    assert a.fidelity["cosine"] == pytest.approx(1.0)


def test_a_win_that_loses_in_combination_is_reverted(tmp_path):
    result = _run(tmp_path, ["test.skip_a", "test.clash"])
    clash = _step(result, "test.clash")
    assert clash.composed_with == ("test.skip_a",)
    assert clash.verdict == REVERTED and clash.speedup < 1
    assert [c.optimizer for c in result.choices] == ["test.skip_a"]


def _watch_final(message):
    if message.startswith("re-measuring the final"):
        FINAL_STARTED["on"] = True


def test_a_composition_slower_when_re_measured_is_reverted_whole(tmp_path):
    FINAL_STARTED["on"] = False
    recipe = parse_recipe(
        {"name": "t", "target": "latency", "rules": [{"name": "p", "try": ["test.fast_until_final"]}]}
    )
    context = Context(machine=describe_machine(), workdir=tmp_path)
    baseline = accel.load(PLANTED / "opt_dead_work.py")
    result = run_engine(baseline, recipe, context, budget_seconds=8, progress=_watch_final)
    assert FINAL_STARTED["on"]
    assert _step(result, "test.fast_until_final").verdict == ACCEPTED  # its own comparison passed...
    # ...and the final re-measure, where it is slower, reverts it: nothing kept, the baseline returned
    assert result.choices == () and result.pipeline.model is baseline.model
    assert "the combination of test.fast_until_final measured" in result.message and "lock is empty" in result.message
    assert result.speedup == 1.0


def test_a_composition_that_fails_its_re_measure_falls_back_to_the_previous_best(tmp_path):
    FINAL_STARTED["on"] = False
    recipe = parse_recipe(
        {"name": "t", "target": "latency", "rules": [{"name": "p", "try": ["test.skip_a", "test.fast_until_final_b"]}]}
    )
    context = Context(machine=describe_machine(), workdir=tmp_path)
    baseline = accel.load(PLANTED / "opt_dead_work.py")
    result = run_engine(baseline, recipe, context, budget_seconds=10, progress=_watch_final)
    assert _step(result, "test.skip_a").verdict == ACCEPTED
    assert _step(result, "test.fast_until_final_b").verdict == ACCEPTED  # a win on top of A while searched
    # the composition is slower when re-measured; A alone, the search's previous best, still wins
    assert "the combination of test.skip_a, test.fast_until_final_b measured" in result.message
    assert "kept test.skip_a (the search's previous best" in result.message
    assert [c.optimizer for c in result.choices] == ["test.skip_a"]
    model = result.pipeline.model
    assert not model.dead_a and model.dead_b and model.extra == 0
    assert result.speedup > 3 and result.speedup_ci[0] > 1.03


def test_an_accepted_optimization_not_applicable_on_a_new_model_is_left_out_of_the_trial(tmp_path):
    recipe = parse_recipe(
        {"name": "t", "target": "latency", "rules": [{"name": "p", "try": ["test.skip_b_needs_a", "test.replace"]}]}
    )
    context = Context(machine=describe_machine(), workdir=tmp_path)
    result = run_engine(accel.load(PLANTED / "opt_dead_work.py"), recipe, context, budget_seconds=10)
    assert _step(result, "test.skip_b_needs_a").verdict == ACCEPTED
    replaced = _step(result, "test.replace")
    # composed in slot order, the model slot first: B's optimizer no longer applies, and is left out
    assert replaced.verdict == ACCEPTED, replaced.reason
    assert "without test.skip_b_needs_a (the model has no dead work A once test.replace is applied)" in replaced.reason
    assert replaced.composed_with == ()
    assert [c.optimizer for c in result.choices] == ["test.replace"]
    assert not result.pipeline.model.dead_a and not result.pipeline.model.dead_b


def test_not_applicable_and_rules_that_do_not_match_are_recorded(tmp_path):
    data = {
        "name": "t",
        "target": "latency",
        "rules": [
            {"name": "never", "try": ["test.never"]},
            {"name": "no-source-only", "when": {"has_source": False}, "try": ["test.skip_a"]},
        ],
    }
    context = Context(machine=describe_machine(), workdir=tmp_path)
    result = run_engine(accel.load(PLANTED / "opt_dead_work.py"), parse_recipe(data), context, budget_seconds=3)
    never, skipped = _step(result, "test.never"), _step(result, "test.skip_a")
    assert never.verdict == NOT_APPLICABLE and never.reason == "planted: never applies"
    assert skipped.verdict == SKIPPED and "has a source" in skipped.reason
    assert result.choices == ()


def test_throughput_target_times_the_whole_run(tmp_path):
    result = _run(tmp_path, ["test.skip_a"], target="throughput")
    assert result.target == "throughput"
    assert result.baseline["samples_per_call"] == 16
    assert _step(result, "test.skip_a").verdict == ACCEPTED


def test_step_records_round_trip_through_json(tmp_path):
    import json

    result = _run(tmp_path, ["test.skip_a", "test.slow"])
    for step in result.steps:
        data = json.loads(json.dumps(step.to_dict()))
        assert data["optimizer"] == step.optimizer and data["verdict"] == step.verdict
        assert dataclasses.asdict(step)["reason"] == data["reason"]


class DropAllDeadWork(_FlagOptimizer):
    name, slot, flags = "test.drop_dead", "test-drop", {"dead_a": False, "dead_b": False}


def test_memory_target_keeps_what_lowers_the_peak(tmp_path):
    OPTIMIZERS.add(DropAllDeadWork.name, DropAllDeadWork())
    try:
        result = _run(tmp_path, ["test.drop_dead"], target="memory")
    finally:
        OPTIMIZERS.remove(DropAllDeadWork.name)
    step = _step(result, "test.drop_dead")
    assert step.memory_ratio is not None and step.memory_ratio < 0.5  # planted: the 160 KB matmul temporaries are gone
    assert step.verdict == ACCEPTED, step.reason
    assert result.memory_ratio < 0.5 and result.final["peak_bytes"] < result.baseline["peak_bytes"]


class Broken(Optimizer):
    name = "test.broken"

    def apply(self, pipeline, config, context):
        raise RuntimeError("planted failure\nsecond line")


def test_a_candidate_that_raises_is_recorded_as_failed(tmp_path):
    OPTIMIZERS.add(Broken.name, Broken())
    try:
        result = _run(tmp_path, ["test.broken", "test.skip_a"])
    finally:
        OPTIMIZERS.remove(Broken.name)
    broken = _step(result, "test.broken")
    assert broken.verdict == "failed" and broken.reason == "RuntimeError: planted failure"
    assert _step(result, "test.skip_a").verdict == ACCEPTED


def test_a_candidate_named_by_two_rules_is_tried_once(tmp_path):
    data = {
        "name": "t",
        "target": "latency",
        "rules": [{"name": "first", "try": ["test.skip_a"]}, {"name": "second", "try": ["test.skip_a"]}],
    }
    context = Context(machine=describe_machine(), workdir=tmp_path)
    result = run_engine(accel.load(PLANTED / "opt_dead_work.py"), parse_recipe(data), context, budget_seconds=20)
    first, second = [s for s in result.steps if s.optimizer == "test.skip_a"]
    assert first.verdict == ACCEPTED
    assert second.verdict == SKIPPED and "already tried (rule 'first')" in second.reason


def test_memory_target_measures_ort_and_torch_the_same_way(tmp_path):
    """ORT's arena is allocated on its first call: measured in-process after the guard ran it, ORT
    read x0.00. A fresh process per side sees it; torch's activations are seen either way."""
    from accel.optimizing.run import optimize

    recipe = {
        "name": "m",
        "target": "memory",
        "guard": {"min_cosine": 0.995, "max_relative_error": 0.1},
        "rules": [{"name": "ort", "try": ["onnx.runtime"]}],
    }
    # Peaks are read in a fresh process per side (seconds each): a budget that fits them.
    result = optimize(PLANTED / "opt_memory_mlp.py", parse_recipe(recipe), budget_seconds=30)
    step = _step(result.result, "onnx.runtime")
    assert step.memory_ratio is not None and step.memory_ratio > 0.2, step.to_dict()
    assert result.result.baseline["peak_measured"].startswith("fresh process")
    assert result.result.baseline["peak_bytes"] > 8 << 20  # at least one 8 MB activation


class CostlyButFaster(_FlagOptimizer):
    """Drops dead work A (about 7x faster per call) after a planted one-time cost of 2 s."""

    name, slot, flags = "test.costly", "test-costly", {"dead_a": False}

    def apply(self, pipeline, config, context):
        applied = super().apply(pipeline, config, context)
        return Applied(pipeline=applied.pipeline, setup_seconds=2.0)


def test_one_time_costs_are_counted_over_the_declared_passes(tmp_path):
    OPTIMIZERS.add(CostlyButFaster.name, CostlyButFaster())
    try:
        few = _run(tmp_path, ["test.costly"], keep={"passes": 1})  # 2 s to save milliseconds once: no
        many = _run(tmp_path, ["test.costly"], keep={"passes": 1_000_000})
    finally:
        OPTIMIZERS.remove(CostlyButFaster.name)
    step = _step(few, "test.costly")
    assert step.verdict == REVERTED and "spread over 1 passes" in step.reason, step.reason
    assert few.choices == ()
    kept = _step(many, "test.costly")
    assert kept.verdict == ACCEPTED, (kept.reason, kept.speedup_ci)


def test_amortized_interval_arithmetic():
    from accel.core.measure import Comparison, Measurement
    from accel.optimizing.search.engine import amortized

    base = Measurement(samples=(1.0, 1.0, 1.0))
    comparison = Comparison(base, base, speedup=2.0, speedup_ci=(1.5, 3.0))
    spread = amortized(comparison, setup_seconds=10.0, passes=10)  # 10 passes of 1 s, then 10 s once
    assert spread.speedup == pytest.approx(10 / (10 / 2.0 + 10))
    assert spread.speedup_ci == pytest.approx((10 / (10 / 1.5 + 10), 10 / (10 / 3.0 + 10)))
    assert amortized(comparison, 0.0, 10) is comparison
