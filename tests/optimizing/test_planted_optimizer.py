"""A plugin needs nothing but its class: an optimizer defined here, registered by its decorator
alone, is tried by the engine when a recipe names it, and removed from the registry after. The
engine never drops a name it cannot try: an unregistered recommendation is a skipped step."""

from __future__ import annotations

import types
from pathlib import Path

import accel
from accel.core.machine import describe_machine
from accel.optimizing.decision import Verdict
from accel.optimizing.optimizers import OPTIMIZERS, Applied, Context, Optimizer, register
from accel.optimizing.recipes.schema import Recipe, Rule, When, parse_recipe
from accel.optimizing.search.engine import run_engine
from accel.optimizing.search.planning import plan

PLANTED = Path(__file__).resolve().parents[1] / "planted"


def _context(tmp_path: Path) -> Context:
    return Context(machine=describe_machine(), workdir=tmp_path)


def test_an_optimizer_registered_by_its_decorator_is_tried_and_judged(tmp_path):
    @register
    class DropDeadWork(Optimizer):
        """Drops the planted model's dead work A (about 7x fewer matmuls); outputs unchanged."""

        name, slot = "planted.drop_dead_work", "planted-drop"

        def apply(self, pipeline, config, context):
            return Applied(pipeline=pipeline.replace(model=pipeline.model.variant(dead_a=False)))

    @register
    class AddWork(Optimizer):
        """Adds matmuls: slower, outputs unchanged."""

        name, slot = "planted.add_work", "planted-add"

        def apply(self, pipeline, config, context):
            return Applied(pipeline=pipeline.replace(model=pipeline.model.variant(extra=120)))

    try:
        assert OPTIMIZERS.get("planted.drop_dead_work").name == DropDeadWork.name
        recipe = parse_recipe(
            {"name": "t", "rules": [{"name": "planted", "try": ["planted.drop_dead_work", "planted.add_work"]}]}
        )
        result = run_engine(accel.load(PLANTED / "opt_dead_work.py"), recipe, _context(tmp_path), budget_seconds=30)
    finally:
        OPTIMIZERS.remove(DropDeadWork.name)
        OPTIMIZERS.remove(AddWork.name)
    steps = {step.optimizer: step for step in result.steps}
    assert steps["planted.drop_dead_work"].verdict is Verdict.ACCEPTED, steps["planted.drop_dead_work"].reason
    assert steps["planted.add_work"].verdict is Verdict.REVERTED, steps["planted.add_work"].reason
    assert [c.optimizer for c in result.choices] == ["planted.drop_dead_work"], result.message
    assert "planted.drop_dead_work" not in OPTIMIZERS and "planted.add_work" not in OPTIMIZERS


def _recommending(*names: str) -> types.SimpleNamespace:
    """A profile with one finding recommending `names` (what an analyzer writes)."""
    finding = types.SimpleNamespace(kind="overhead", severity="high", recommendations=list(names), evidence={})
    return types.SimpleNamespace(findings=[finding], primary="overhead", finding=lambda kind: finding)


def _recommended_recipe() -> Recipe:
    rule = Rule(name="cures", candidates=(), when=When(findings=("overhead",)), recommended=True)
    return Recipe(name="t", description="", target="latency", rules=(rule,))


def test_an_unregistered_recommendation_is_a_skipped_step_not_dropped():
    pipeline = accel.load(PLANTED / "opt_dead_work.py")
    planned, skipped = plan(_recommended_recipe(), pipeline, _recommending("compile", "no.such_cure"))
    assert [c.optimizer for _, c in planned] == ["compile"]
    (step,) = skipped
    assert step.optimizer == "no.such_cure" and step.verdict is Verdict.SKIPPED and step.rule == "cures"
    assert step.reason.startswith("a overhead finding recommends 'no.such_cure', but no optimizer 'no.such_cure' is")
    assert "optimizers that cure overhead: " in step.reason and "onnx.runtime" in step.reason


def test_the_engine_reports_an_unregistered_recommendation(tmp_path):
    pipeline = accel.load(PLANTED / "opt_dead_work.py")
    result = run_engine(
        pipeline, _recommended_recipe(), _context(tmp_path), budget_seconds=2, report=_recommending("no.such_cure")
    )
    (step,) = result.steps
    assert step.verdict is Verdict.SKIPPED and "no optimizer 'no.such_cure' is registered" in step.reason
    assert step.to_dict()["verdict"] == "skipped" and result.choices == ()
