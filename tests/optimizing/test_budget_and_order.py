"""The engine's budget, order, selection, safer variants and too-noisy verdict, on planted
optimizers registered for the test. Where a test is about what the engine decides, never about
speed, the comparison is a fake (`fake_timing`): the speed-up a planted model declares, so the
tests hold on a machine as loaded as a shared CI runner."""

from __future__ import annotations

import dataclasses
import json
import time
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from typer.testing import CliRunner

import accel
from accel.cli import app
from accel.core.errors import UnknownComponentError
from accel.core.machine import describe_machine
from accel.core.measure import Comparison, Measurement
from accel.optimizing.decision import Cause, KeepTest, Load, Verdict, decide
from accel.optimizing.optimizers import NUMERICS, OPTIMIZERS, Applied, Context, Optimizer
from accel.optimizing.recipes.schema import Guard, parse_recipe
from accel.optimizing.search.budgeting import PROCESS_WIDE_SHARE, Costs, extends_closure, predicted_savings, shortfall
from accel.optimizing.search.engine import SKIPPED, Search, run_engine
from accel.optimizing.search.final import MIN_COMPARE_SECONDS, Timing, final_check
from accel.optimizing.search.planning import Selection, select
from accel.profiling.contention import Contention

PLANTED = Path(__file__).resolve().parents[1] / "planted"
runner = CliRunner()


class _Marked(Optimizer):
    """Marks the model with the speed-up the fake timing reports for it (outputs unchanged)."""

    speedup: ClassVar[float] = 2.0
    sleep_seconds: ClassVar[float] = 0.0
    predicted_setup_calls: ClassVar[float] = 0.0

    def apply(self, pipeline, config, context):
        time.sleep(self.sleep_seconds)
        model = pipeline.model.variant()
        model.planted_speedup = getattr(pipeline.model, "planted_speedup", 1.0) * self.speedup
        return Applied(pipeline=pipeline.replace(model=model), setup_seconds=self.sleep_seconds)


class Cheap(_Marked):
    name, slot = "test.cheap", "test-cheap"


class Costly(_Marked):
    name, slot, sleep_seconds, predicted_setup_seconds = "test.costly_cure", "test-costly", 1.0, 1.0


class Cure(_Marked):
    """What the planted profile's primary finding recommends."""

    name, slot, cures = "test.cure", "test-cure", ("overhead",)


class ProcessWide(_Marked):
    """Ordered like runtime.allocator (fresh processes), never applicable here: nothing is spent."""

    name, slot, process_wide = "test.process_wide", "test-pw", True

    def applicable(self, pipeline, context):
        return "planted: never applies"


def _slow(seconds: float) -> type[_Marked]:
    class Slow(_Marked):
        name, slot = f"test.sleep_{seconds:g}", f"test-sleep-{seconds:g}"
        sleep_seconds = predicted_setup_seconds = seconds

    return Slow


@dataclasses.dataclass(frozen=True)
class LevelConfig:
    level: int = 0


class Quantizer(Optimizer):
    """Level 0 breaks the outputs (zeros); its safer variant, level 1, keeps them and is faster."""

    name, slot, Config = "test.quantizer", "test-quant", LevelConfig

    def apply(self, pipeline, config, context):
        if config.level == 0:
            return Applied(pipeline=pipeline.replace(model=lambda x: torch.zeros(x.shape[0], 8)))
        model = pipeline.model.variant()
        model.planted_speedup = 3.0
        return Applied(pipeline=pipeline.replace(model=model))

    def safer_variants(self, config, machine):
        return [LevelConfig(level=1), LevelConfig(level=2)] if config.level == 0 else []


class Breaker(Optimizer):
    """An int8 rung ladder no rung of which holds the outputs (zeros), each a second to apply."""

    name, slot, Config = "test.breaker", "test-break", LevelConfig

    def apply(self, pipeline, config, context):
        time.sleep(1.0)
        return Applied(pipeline=pipeline.replace(model=lambda x: torch.zeros(x.shape[0], 8)))

    def safer_variants(self, config, machine):
        return [LevelConfig(level=n) for n in range(1, 9)] if config.level == 0 else []


class SlowBreaker(Breaker):
    """Breaker whose every rung takes 2 s, where the optimizer predicts nothing for its setup."""

    name, slot = "test.slow_breaker", "test-slow-break"

    def apply(self, pipeline, config, context):
        time.sleep(1.0)
        return super().apply(pipeline, config, context)


class Base(_Marked):
    """A plain runtime: onnx.int8_dynamic's place."""

    name, slot, speedup = "test.base", "test-runtime", 2.0


class Extender(_Marked):
    """Base's change and more (onnx.fusions_int8's place): the same slot, faster."""

    name, slot, extends, speedup = "test.extender", "test-runtime", "test.base", 3.0
    predicted_setup_seconds = 2.0  # dearer to set up: by saving per second alone it would follow Base


class Int8Breaks(Optimizer):
    """An int8 candidate no tool's int8 holds the outputs under (zeros), without a ladder."""

    name, slot, numerics = "test.int8_breaks", "test-int8-breaks", "int8"
    predicted_setup_calls: ClassVar[float] = 0.0  # ranked as the others are: the recipe's order decides

    def apply(self, pipeline, config, context):
        return Applied(pipeline=pipeline.replace(model=lambda x: torch.zeros(x.shape[0], 8)))


class Int8Holds(Quantizer):
    """Quantizer's ladder (its safer variant passes), at int8."""

    name, slot, numerics = "test.int8_holds", "test-int8-holds", "int8"
    predicted_setup_calls: ClassVar[float] = 0.0


class FloatBreaks(Int8Breaks):
    name, slot, numerics = "test.float_breaks", "test-float-breaks", "float32"


class Int8Other(_Marked):
    name, slot, numerics = "test.int8_other", "test-int8-other", "int8"


class Half(_Marked):
    name, slot, numerics = "test.half", "test-half", "float16"


class ModelRuntime(_Marked):
    """Replaces the model (onnx.runtime's place): what it keeps can be tuned."""

    name, slot = "test.model_runtime", "model"

    def apply(self, pipeline, config, context):
        applied = super().apply(pipeline, config, context)
        applied.pipeline.model.in_runtime = True
        return applied


class Tuner(_Marked):
    """A setting of what the model slot keeps (runtime.spinning's place): applies once it is kept."""

    name, slot, tunes_kept, speedup = "test.tuner", "test-tuner", True, 1.2

    def applicable(self, pipeline, context):
        return None if getattr(pipeline.model, "in_runtime", False) else "planted: no runtime kept"

    def apply(self, pipeline, config, context):
        assert pipeline.model.in_runtime, "planted: applied to a model no runtime kept"
        return super().apply(pipeline, config, context)


class ModelOther(_Marked):
    """Another way of replacing the model, tried after the tuner was kept on the first."""

    name, slot, speedup = "test.model_other", "model", 1.5


PLANTED_OPTIMIZERS = (
    ModelRuntime,
    ModelOther,
    Tuner,
    Int8Breaks,
    Int8Holds,
    FloatBreaks,
    Int8Other,
    Half,
    Cheap,
    Costly,
    Cure,
    ProcessWide,
    Quantizer,
    Breaker,
    SlowBreaker,
    Base,
    Extender,
    _slow(1.5),
    _slow(1.6),
    _slow(1.7),
)


@pytest.fixture(autouse=True)
def _planted_optimizers(monkeypatch):
    """The planted optimizers registered; the baseline's per-call time planted at 1 ms (what the
    trials' costs are predicted from); one thread, so a loaded machine slows the guard's calls
    without stretching them many times over."""
    monkeypatch.setattr(Search, "_time_baseline", lambda self: Measurement((0.001, 0.001, 0.001)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for cls in PLANTED_OPTIMIZERS:
        OPTIMIZERS.add(cls.name, cls())
    yield
    for cls in PLANTED_OPTIMIZERS:
        OPTIMIZERS.remove(cls.name)
    torch.set_num_threads(threads)


def _speed(pipeline: Any) -> float:
    return float(getattr(pipeline.model, "planted_speedup", 1.0))


@pytest.fixture
def fake_timing(monkeypatch):
    """Comparisons that take no time: the ratio of the planted speed-ups, a tight interval."""

    def compare(self, best, trial, seconds, deadline=None, threshold=None):
        ratio = _speed(trial[0]) / _speed(best[0])
        samples = Measurement(tuple([0.01] * 7))
        return Comparison(samples, samples, speedup=ratio, speedup_ci=(ratio * 0.97, ratio * 1.03)), {}

    monkeypatch.setattr(Timing, "compare", compare)


def _context(tmp_path: Path) -> Context:
    return Context(machine=describe_machine(), workdir=tmp_path)


def _recipe(*names: str, **extra: Any):
    return parse_recipe({"name": "t", "target": "latency", "rules": [{"name": "r", "try": list(names)}], **extra})


def _profile(recommends: str, saving: float) -> Any:
    """A profile whose primary finding recommends `recommends` with a predicted saving."""
    finding = types.SimpleNamespace(
        kind="overhead",
        severity="high",
        recommendations=[recommends],
        evidence={"predicted_saving": {recommends: saving}},
    )
    return types.SimpleNamespace(findings=[finding], primary="overhead", finding=lambda kind: finding)


def _steps(result: Any) -> dict[str, Any]:
    return {step.optimizer: step for step in result.steps}


def test_the_primary_findings_cure_goes_first_and_a_process_wide_candidate_last(tmp_path):
    baseline = accel.load(PLANTED / "opt_dead_work.py")
    recipe = _recipe("test.process_wide", "test.costly_cure", "test.cheap", "test.cure")
    search = Search(baseline, recipe, _context(tmp_path), budget_seconds=60, report=_profile("test.cure", 0.4))
    order = [candidate.optimizer for _, candidate in search.plan()]
    # the cure first though listed last; then by saving per second (cheap before costly); fresh processes last
    assert order == ["test.cure", "test.cheap", "test.costly_cure", "test.process_wide"]
    as_written = Search(baseline, _recipe(*order[::-1], order="as_written"), _context(tmp_path), budget_seconds=60)
    assert [c.optimizer for _, c in as_written.plan()] == order[::-1]


def test_the_prediction_is_shown_beside_the_measurement(tmp_path, fake_timing):
    baseline = accel.load(PLANTED / "opt_dead_work.py")
    result = run_engine(
        baseline,
        _recipe("test.cheap", "test.cure"),
        _context(tmp_path),
        budget_seconds=20,
        report=_profile("test.cure", 0.5),
    )
    cure = _steps(result)["test.cure"]
    assert cure.predicted_speedup == pytest.approx(2.0) and cure.speedup == pytest.approx(2.0)
    assert cure.to_dict()["predicted_speedup"] == pytest.approx(2.0)
    assert _steps(result)["test.cheap"].predicted_speedup is None


def test_the_budget_holds_and_what_does_not_fit_says_what_it_needs(tmp_path, fake_timing):
    baseline = accel.load(PLANTED / "opt_dead_work.py")
    recipe = _recipe("test.sleep_1.5", "test.sleep_1.6", "test.sleep_1.7", order="as_written")
    began = time.perf_counter()
    result = run_engine(baseline, recipe, _context(tmp_path), budget_seconds=3.0)
    elapsed = time.perf_counter() - began
    assert elapsed < 3.0 * 1.1 + 1.5, elapsed  # start-up slack: loading the baseline's batches, its calls
    steps = _steps(result)
    assert steps["test.sleep_1.5"].verdict is Verdict.ACCEPTED, steps["test.sleep_1.5"].reason
    later = [steps["test.sleep_1.6"], steps["test.sleep_1.7"]]
    assert all(s.verdict is Verdict.SKIPPED and s.reason.startswith("needs ~") for s in later), later
    assert all(int(s.reason.split("~")[1].split(" ")[0]) >= 1 for s in later)


def test_a_fresh_process_candidate_may_take_a_small_share_of_the_budget():
    assert shortfall(10.0, 100.0, None, 120.0) is None
    assert shortfall(30.0, 100.0, PROCESS_WIDE_SHARE * 120.0, 120.0) == 80  # 30 s is 15% of 200 s
    costs = Costs(call_seconds=0.5, load_seconds=8.0, target="latency")
    assert costs.trial_seconds(ProcessWide(), Guard()) > 5 * costs.trial_seconds(Cheap(), Guard())


def test_after_a_win_a_trial_is_predicted_at_the_current_bests_speed():
    # its guard and rounds time the current best (3x faster here); its setup still runs the model as it was
    costs = Costs(call_seconds=2.4, load_seconds=8.0, target="latency")
    won = dataclasses.replace(costs, best_call_seconds=0.8)
    setup = Cheap.predicted_setup_seconds + Cheap.predicted_setup_calls * 2.4
    assert won.trial_seconds(Cheap(), Guard()) - setup == pytest.approx(
        (costs.trial_seconds(Cheap(), Guard()) - setup) / 3
    )
    slower = dataclasses.replace(costs, best_call_seconds=5.0)  # a burst of load on the best's calls
    assert slower.trial_seconds(Cheap(), Guard()) == costs.trial_seconds(Cheap(), Guard())


def test_nothing_kept_means_no_final_re_measure(tmp_path, monkeypatch):
    said: list[str] = []
    baseline = accel.load(PLANTED / "opt_dead_work.py")
    result = run_engine(
        baseline, _recipe("test.process_wide"), _context(tmp_path), budget_seconds=5, progress=said.append
    )
    assert not any("re-measuring" in message for message in said), said
    assert result.choices == () and result.speedup == 1.0 and result.final["median_seconds"] > 0
    assert result.message.startswith("no candidate helped: the lock is empty")
    assert "no candidate fit the budget" in result.message  # its one candidate needs more than 5 s


def test_a_guard_failure_tries_the_safer_variants_and_keeps_the_first_that_passes(tmp_path, fake_timing):
    baseline = accel.load(PLANTED / "opt_dead_work.py")
    result = run_engine(baseline, _recipe("test.quantizer"), _context(tmp_path), budget_seconds=20)
    rows = [step for step in result.steps if step.optimizer == "test.quantizer"]
    assert [row.params for row in rows] == [{}, {"level": 1}]  # level 2 is not tried: level 1 passed
    assert rows[0].verdict is Verdict.REVERTED and rows[0].cause is Cause.GUARD
    assert rows[1].verdict is Verdict.ACCEPTED and rows[1].reason.startswith("safer variant (level=1): kept")
    assert [(c.optimizer, c.params) for c in result.choices] == [("test.quantizer", {"level": 1})]


def test_safer_variants_that_never_pass_stop_at_their_share_and_the_others_are_tried(tmp_path, fake_timing):
    # GPT-2's forward at random init: five int8 rungs took the budget, the float runtimes never ran
    baseline = accel.load(PLANTED / "opt_dead_work.py")
    result = run_engine(
        baseline, _recipe("test.breaker", "test.cheap", order="as_written"), _context(tmp_path), budget_seconds=12
    )
    rows = [step for step in result.steps if step.optimizer == "test.breaker"]
    tried = [row for row in rows if row.verdict is Verdict.REVERTED]
    assert 2 <= len(tried) < 9 and all(row.cause is Cause.GUARD for row in tried)
    stopped = rows[-1]
    assert stopped.verdict is Verdict.SKIPPED and "over 33% of the" in stopped.reason, stopped.reason
    assert stopped.reason.startswith(f"safer variant (level={len(tried)}): not tried")
    cheap = next(step for step in result.steps if step.optimizer == "test.cheap")
    assert cheap.verdict is Verdict.ACCEPTED, cheap.reason


def test_a_safer_variant_is_not_started_when_the_rung_before_took_more_than_is_left(tmp_path, fake_timing):
    # GPT-2's fused int8 loop: the per-channel rung, predicted at 17 s, started with 21 s left, took 38 s
    baseline = accel.load(PLANTED / "opt_dead_work.py")
    began = time.perf_counter()
    result = run_engine(baseline, _recipe("test.slow_breaker"), _context(tmp_path), budget_seconds=3)
    rows = [step for step in result.steps if step.optimizer == "test.slow_breaker"]
    assert rows[0].cause is Cause.GUARD and rows[1].verdict is Verdict.SKIPPED, rows
    assert rows[1].reason.startswith("safer variant (level=1): needs ~"), rows[1].reason
    assert "the rung before took 2 s" in rows[1].reason
    assert time.perf_counter() - began < 3 + 1.5  # the first rung alone: not a second 2 s rung on top


def test_an_int8_failure_at_every_rung_puts_the_other_int8_candidates_after_the_rest(tmp_path, fake_timing):
    # GPT-2's forward at random init: every int8 tool failed top-1, and the float runtimes were skipped
    baseline = accel.load(PLANTED / "opt_dead_work.py")
    names = ("test.int8_breaks", "test.int8_other", "test.half", "test.cheap")
    said: list[str] = []
    result = run_engine(baseline, _recipe(*names), _context(tmp_path), budget_seconds=30, progress=said.append)
    assert [step.optimizer for step in result.steps] == [
        "test.int8_breaks",
        "test.half",
        "test.cheap",
        "test.int8_other",
    ]
    assert any(
        "test.int8_breaks failed the guard at every rung tried" in line and "(test.int8_other)" in line for line in said
    )
    assert {c.optimizer for c in result.choices} == {"test.half", "test.cheap", "test.int8_other"}
    as_written = run_engine(baseline, _recipe(*names, order="as_written"), _context(tmp_path), budget_seconds=30)
    assert [step.optimizer for step in as_written.steps] == list(names)


def test_a_trial_that_failed_the_guard_is_timed_briefly_and_not_said_to_be_cut(tmp_path, monkeypatch):
    left: list[float] = []

    def brief(self, best, trial, seconds, deadline=None, threshold=None):
        left.append(deadline - time.perf_counter())
        samples = Measurement((0.01, 0.01, 0.01))
        return Comparison(samples, samples, speedup=1.0, speedup_ci=(0.97, 1.03)), {}

    monkeypatch.setattr(Timing, "compare", brief)
    result = run_engine(accel.load(PLANTED / "opt_dead_work.py"), _recipe("test.int8_breaks"), _context(tmp_path))
    (step,) = result.steps
    assert step.cause is Cause.GUARD and "cut at the end" not in step.reason, step.reason
    assert left and left[0] <= MIN_COMPARE_SECONDS  # its deadline too: not the fewest rounds of a comparison


def test_a_safer_variant_that_holds_or_a_float_failure_moves_nothing(tmp_path, fake_timing):
    baseline = accel.load(PLANTED / "opt_dead_work.py")
    for first in ("test.int8_holds", "test.float_breaks"):  # a rung that passes; a float32 failure
        names = (first, "test.int8_other", "test.cheap")
        result = run_engine(baseline, _recipe(*names), _context(tmp_path), budget_seconds=40)
        order = list(dict.fromkeys(step.optimizer for step in result.steps))
        assert order == list(names), (first, order)


def test_every_optimizer_declares_how_coarse_its_arithmetic_is():
    assert all(optimizer.numerics in NUMERICS for _, optimizer in OPTIMIZERS.items())
    coarse = {name: OPTIMIZERS.get(name).numerics for name in OPTIMIZERS.names()}
    assert coarse["onnx.runtime"] == coarse["openvino.runtime"] == coarse["compile"] == "float32"
    assert coarse["precision.bf16"] == coarse["openvino.bf16"] == "float16"
    int8 = ("onnx.int8_dynamic", "onnx.fusions_int8", "quantize.int8_dynamic", "openvino.int8", "onnx.generate_int8")
    assert {coarse[name] for name in int8} == {"int8"}
    assert coarse["onnx.weight_only"] == "int4"


def test_int8_optimizers_declare_their_ladders():
    machine = dataclasses.replace(describe_machine(), isa_flags=("avx2", "fma"))
    onnx = OPTIMIZERS.get("onnx.int8_dynamic")
    rungs = onnx.safer_variants(onnx.Config(), machine)
    assert [(r.per_channel, r.reduce_range, r.weight_type, r.keep_float) for r in rungs] == [
        (True, False, "QInt8", 0.0),
        (True, True, "QInt8", 0.0),
        (True, True, "QUInt8", 0.0),  # U8U8 only where there is no VNNI
        (True, True, "QUInt8", 0.1),  # then the worst layers left in float
        (True, True, "QUInt8", 0.25),
    ]
    vnni = dataclasses.replace(machine, isa_flags=("avx2", "avx512f", "avx512_vnni"))
    assert [r.weight_type for r in onnx.safer_variants(onnx.Config(), vnni)] == ["QInt8"] * 4
    torch_int8 = OPTIMIZERS.get("quantize.int8_dynamic")
    assert torch_int8.safer_variants(torch_int8.Config(), machine) == [
        torch_int8.Config(per_channel=True),
        torch_int8.Config(per_channel=True, keep_float=0.1),  # the worst tenth of the layers left in float
        torch_int8.Config(per_channel=True, keep_float=0.25),
    ]
    assert OPTIMIZERS.get("onnx.runtime").safer_variants(OPTIMIZERS.get("onnx.runtime").Config(), machine) == []


def test_an_interval_too_wide_to_decide_is_too_noisy_never_kept():
    test = KeepTest("latency", min_speedup=1.03)
    spans = decide(test, 1.1, (0.8, 1.5))
    assert not spans.kept and spans.cause is Cause.TOO_NOISY and spans.verdict is Verdict.REVERTED
    assert spans.reason == "too noisy to decide: the interval 0.80-1.50x cannot resolve 1.03x"
    busy = decide(test, 1.02, (0.98, 1.08), load=Load(6.2, 2))
    assert busy.cause is Cause.TOO_NOISY and "the machine was busy (load average 6.2 on 2 cores)" in busy.reason
    quiet = decide(test, 1.02, (0.98, 1.08), load=Load(0.5, 2))
    assert quiet.cause is Cause.WITHIN_NOISE
    assert decide(test, 1.5, (1.2, 1.9), load=Load(6.2, 2)).kept  # clearly faster, busy or not
    assert decide(test, 0.5, (0.3, 0.9), load=Load(6.2, 2)).cause is Cause.SLOWER


def test_the_summary_says_the_machine_was_too_busy(tmp_path, monkeypatch):
    from accel.optimizing.search import engine

    def noisy(self, best, trial, seconds, deadline=None, threshold=None):
        samples = Measurement(tuple([0.01] * 7))
        return Comparison(samples, samples, speedup=1.1, speedup_ci=(0.7, 1.6)), {}

    monkeypatch.setattr(Timing, "compare", noisy)
    monkeypatch.setattr(engine.Load, "now", classmethod(lambda cls: Load(7.5, 2)))
    result = run_engine(
        accel.load(PLANTED / "opt_dead_work.py"), _recipe("test.cheap"), _context(tmp_path), budget_seconds=10
    )
    step = _steps(result)["test.cheap"]
    assert step.verdict is Verdict.REVERTED and step.cause is Cause.TOO_NOISY
    assert result.choices == ()
    assert "too noisy to decide on test.cheap: the machine was too busy (load average 7.5 on 2 cores)" in result.message


def test_only_and_skip_select_by_name_and_unknown_names_are_errors():
    rule = parse_recipe({"name": "t", "rules": [{"name": "r", "try": ["test.cheap", "test.cure"]}]}).rules[0]
    planned = [(rule, candidate) for candidate in rule.candidates]
    kept, skipped = select(planned, Selection.of(only=["test.cure,test.quantizer"]))
    assert [c.optimizer for _, c in kept] == ["test.cure"]
    reasons = {step.optimizer: step.reason for step in skipped}
    assert reasons["test.cheap"].startswith("not among --only") and "does not try it" in reasons["test.quantizer"]
    kept, skipped = select(planned, Selection.of(skip=["test.cheap"]))
    assert [c.optimizer for _, c in kept] == ["test.cure"] and skipped[0].reason == "left out by --skip"
    with pytest.raises(UnknownComponentError) as error:
        Selection.of(only=["warp.drive"])
    assert "warp.drive" in error.value.message and "onnx.runtime" in error.value.hint


def test_only_and_skip_on_the_command_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: r\ntarget: latency\norder: as_written\nrules: [{name: r, try: [test.process_wide, onnx.runtime]}]\n"
    )
    pipeline = str(PLANTED / "opt_dead_work.py")
    bad = runner.invoke(app, ["optimize", pipeline, "--recipe", str(recipe), "--skip", "warp.drive"])
    assert bad.exit_code == 2 and "unknown optimizer 'warp.drive'" in bad.output and "onnx.runtime" in bad.output
    out = tmp_path / "result.json"
    args = ["optimize", pipeline, "--recipe", str(recipe), "--only", "test.process_wide", "--budget", "5"]
    ran = runner.invoke(app, [*args, "--out", str(tmp_path / "o"), "--json", str(out)])
    assert ran.exit_code == 0, ran.output
    steps = {s["optimizer"]: s for s in json.loads(out.read_text())["steps"]}
    # its fresh processes (each rebuilding the pipeline) do not fit 15% of 5 s
    assert steps["test.process_wide"]["verdict"] == "skipped", steps["test.process_wide"]
    assert steps["test.process_wide"]["reason"].startswith("needs ~")
    assert steps["onnx.runtime"]["verdict"] == "skipped" and "--only" in steps["onnx.runtime"]["reason"]


def test_a_slow_baseline_is_timed_in_fewer_calls():
    """At 15 s a call, three timed calls of the baseline were a minute of a 300 s budget: once the
    calls have taken BASELINE_MAX_SECONDS, no more are made; a fast call is timed BASELINE_CALLS times."""
    import time
    import types

    from accel.optimizing.search.measuring import BASELINE_CALLS, BASELINE_MAX_SECONDS, time_baseline

    measurer = types.SimpleNamespace(sync=lambda: None, target="latency")
    slow = time_baseline(lambda: time.sleep(BASELINE_MAX_SECONDS * 0.55), measurer, warm=False)
    assert slow.count == 2
    fast = time_baseline(lambda: None, measurer, warm=False)
    assert fast.count >= BASELINE_CALLS


def test_a_search_that_measured_nothing_for_want_of_budget_says_why_and_what_to_do():
    """At load 13 a BERT-base call took 15 s and every candidate was skipped for budget: the summary
    says so with the call time and the load, rather than only 'no candidate helped'."""
    from accel.optimizing.decision import Load, Verdict
    from accel.optimizing.search.outcome import budget_note
    from accel.optimizing.steps import Step

    unfit = Step("quantize.int8_dynamic", {}, "compute", Verdict.SKIPPED, "needs ~354 s more budget: ...")
    busy = Load(13.6, 2)
    note = budget_note([unfit], busy, 15.2)
    assert "no candidate fit the budget: the baseline took 15.2 s a call; load average 13.6 on 2 cores" in note
    assert "fewer --threads or a quieter machine" in note
    assert "quieter" not in budget_note([unfit], Load(0.5, 2), 15.2)
    measured = Step("runtime.threads", {}, "threads", Verdict.REVERTED, "slower", speedup=0.9)
    assert budget_note([unfit, measured], busy, 15.2) == ""  # something was measured: its row says it


def test_a_single_win_is_not_re_measured_when_no_budget_is_left():
    """No reserve is held back before a first win (a BERT-base at load 10 skipped every candidate,
    88 of 215 s 'left'): the first win was measured against the baseline itself, so where no budget
    is left it stands as its trial measured it, and the summary says so. Nothing is re-timed here:
    a re-measure would need `timing`, given as None."""
    from accel.optimizing.search.composer import Choice
    from accel.optimizing.search.final import measured_win, settle

    comparison = Comparison(
        Measurement((0.010, 0.011, 0.010)), Measurement((0.002, 0.002, 0.002)), speedup=5.0, speedup_ci=(4.5, 5.5)
    )
    decision = decide(KeepTest(), 5.0, (4.5, 5.5))
    choice = Choice("test.skip_a", {}, {}, "test.skip_a")
    win = measured_win(None, (choice,), comparison, decision)
    composer = types.SimpleNamespace(baseline=None)
    bests = [{}, {"test.skip_a": (None, None, None)}]
    final, message = settle(None, composer, bests, lambda: 0.0, 30.0, lambda m: None, comparison.baseline, win)
    assert final is win and final.comparison.speedup == 5.0
    assert (
        message
        == "kept test.skip_a (not re-measured: no budget was left, and its trial measured it against the baseline)"
    )


def test_no_reserve_is_held_back_before_a_first_win(tmp_path):
    search = Search(
        accel.load(PLANTED / "opt_dead_work.py"), _recipe("test.process_wide"), _context(tmp_path), budget_seconds=300
    )
    assert search.reserve() == 0.0 and search.first_win is None
    search.first_win = object()  # any win: from then on a re-measure of the composition is budgeted
    assert search.reserve() >= 0.15 * 300


def test_an_extender_goes_just_before_its_base_with_its_prediction_and_when_kept_the_base_is_skipped(
    tmp_path, fake_timing
):
    baseline = accel.load(PLANTED / "opt_dead_work.py")
    recipe = _recipe("test.cheap", "test.base", "test.extender")
    search = Search(baseline, recipe, _context(tmp_path), budget_seconds=60, report=_profile("test.base", 0.6))
    order = [candidate.optimizer for _, candidate in search.plan()]
    # the primary finding's cure is test.base: what extends it goes first, though dearer and unpredicted
    assert order == ["test.extender", "test.base", "test.cheap"]
    assert search.predicted["test.extender"] == pytest.approx(0.6)
    result = run_engine(baseline, recipe, _context(tmp_path), budget_seconds=30, report=_profile("test.base", 0.6))
    steps = _steps(result)
    assert steps["test.extender"].verdict is Verdict.ACCEPTED, steps["test.extender"].reason
    assert steps["test.base"].verdict is Verdict.SKIPPED
    assert "test.extender (kept) already does what it does" in steps["test.base"].reason


def test_the_fusion_optimizers_extend_their_plain_runtimes():
    assert OPTIMIZERS.get("onnx.fusions_int8").extends == "onnx.int8_dynamic"
    assert OPTIMIZERS.get("onnx.int8_dynamic").extends == "onnx.runtime"
    assert extends_closure(OPTIMIZERS.get("onnx.fusions_int8")) == {"onnx.int8_dynamic", "onnx.runtime"}
    assert OPTIMIZERS.get("onnx.fusions").extends == "onnx.runtime"
    assert OPTIMIZERS.get("onnx.int8_static").extends == "onnx.runtime"
    assert OPTIMIZERS.get("openvino.int8").extends == "openvino.runtime"
    # the generate loops in a graph runtime keep the KV cache on, and more: tried before it
    assert extends_closure(OPTIMIZERS.get("onnx.generate_fused_int8")) == {
        "onnx.generate_int8",
        "onnx.generate",
        "generation.kv_cache",
    }
    assert extends_closure(OPTIMIZERS.get("openvino.generate_int8")) == {"openvino.generate", "generation.kv_cache"}


def test_a_chain_of_extenders_is_tried_outermost_first(tmp_path):
    baseline = accel.load(PLANTED / "opt_dead_work.py")
    planted = [
        type("Runtime", (_Marked,), {"name": "test.rt", "slot": "test-chain"}),
        type("Int8", (_Marked,), {"name": "test.rt_int8", "slot": "test-chain", "extends": "test.rt"}),
        type("Fused", (_Marked,), {"name": "test.rt_int8_fused", "slot": "test-chain", "extends": "test.rt_int8"}),
    ]
    for cls in planted:
        OPTIMIZERS.add(cls.name, cls())
    try:
        recipe = _recipe("test.rt", "test.cheap", "test.rt_int8", "test.rt_int8_fused")
        search = Search(baseline, recipe, _context(tmp_path), budget_seconds=60, report=_profile("test.rt", 0.5))
        order = [candidate.optimizer for _, candidate in search.plan()]
        assert order == ["test.rt_int8_fused", "test.rt_int8", "test.rt", "test.cheap"]
    finally:
        for cls in planted:
            OPTIMIZERS.remove(cls.name)


@pytest.mark.parametrize(
    "load, busy, expected",
    [(5.0, None, 0.5), (5.0, 2.0, 0.5), (0.2, 0.8, 0.4), (2.0, 0.1, None), (0.85, 0.2, None), (0.2, None, None)],
)
def test_an_oversubscribed_machine_puts_the_thread_count_first(tmp_path, load, busy, expected):
    baseline = accel.load(PLANTED / "opt_dead_work.py")
    # the cores measured busy when there are (a load of 2 left by the last minute's own work is not other work)
    contention = Contention(load_average=load, cores=2, threads=2, busy_cores=busy).to_dict()
    report = types.SimpleNamespace(
        findings=[], primary="none", finding=lambda kind: None, extra={"contention": contention}
    )
    assert predicted_savings(report).get("runtime.threads") == (pytest.approx(expected) if expected else None)
    recipe = _recipe("test.cheap", "test.costly_cure", "runtime.threads")
    order = [
        c.optimizer for _, c in Search(baseline, recipe, _context(tmp_path), budget_seconds=60, report=report).plan()
    ]
    # other work holds a core the team of two needs: predicted to run at the idle share; else unpredicted
    assert (order[0] == "runtime.threads") == (expected is not None)


@pytest.mark.parametrize("threads, trials", [(2, 1), (4, 2)])
def test_two_recipe_lines_that_ask_for_the_same_thread_count_are_one_trial(tmp_path, fake_timing, threads, trials):
    torch.set_num_threads(threads)  # the autouse fixture puts the count back
    baseline = accel.load(PLANTED / "opt_dead_work.py")
    half_then_one = _recipe("runtime.threads", {"optimizer": "runtime.threads", "params": {"threads": 1}})
    result = run_engine(baseline, half_then_one, _context(tmp_path), budget_seconds=30)
    steps = [step for step in result.steps if step.optimizer == "runtime.threads"]
    # on two cores "half" is one thread: the second line is that trial again, and is not run
    assert len(steps) == 2 and sum(step.verdict != SKIPPED for step in steps) == trials
    assert ("already tried" in steps[1].reason) == (trials == 1)


@pytest.mark.parametrize("busy", [None, 2.0])
def test_a_setting_of_what_the_model_slot_kept_is_tried_next_unless_the_cores_are_short(tmp_path, fake_timing, busy):
    # GPT-2's generate loop kept in ONNX Runtime: ranked by cost, runtime.spinning was skipped for want of budget
    baseline = accel.load(PLANTED / "opt_dead_work.py")
    report = None
    if busy is not None:  # other work holds both cores the team of two needs
        contention = Contention(load_average=5.0, cores=2, threads=2, busy_cores=busy).to_dict()
        report = types.SimpleNamespace(
            findings=[], primary="none", finding=lambda kind: None, extra={"contention": contention}
        )
    said: list[str] = []
    recipe = _recipe("test.model_runtime", "test.cheap", "test.tuner")
    result = run_engine(baseline, recipe, _context(tmp_path), budget_seconds=30, progress=said.append, report=report)
    order = [step.optimizer for step in result.steps]
    if busy is None:
        assert order == ["test.model_runtime", "test.tuner", "test.cheap"]
        assert any("test.tuner next, on the" in line for line in said)
        assert _steps(result)["test.tuner"].verdict == Verdict.ACCEPTED  # measured on the runtime kept
    else:  # a spinning pool would take the cores from the rest: by cost alone, in the recipe's order
        assert order == ["test.model_runtime", "test.cheap", "test.tuner"]
    # listed first, it still goes after the others: before anything is kept it applies to nothing
    first = _recipe("test.tuner", "test.cheap", "test.model_runtime")
    plan = [c.optimizer for _, c in Search(baseline, first, _context(tmp_path), budget_seconds=30).plan()]
    assert plan == ["test.cheap", "test.model_runtime", "test.tuner"]
    # another model candidate on trial: the setting, kept on the first, is left out of its composition
    other = run_engine(
        baseline, _recipe("test.model_runtime", "test.tuner", "test.model_other"), _context(tmp_path), budget_seconds=30
    )
    assert [step.verdict for step in other.steps] == [Verdict.ACCEPTED] * 2 + [Verdict.REVERTED]
    # nothing kept in the model slot: it applies to nothing
    alone = run_engine(baseline, _recipe("test.tuner", "test.cheap"), _context(tmp_path), budget_seconds=30)
    assert _steps(alone)["test.tuner"].verdict == Verdict.NOT_APPLICABLE


def test_the_final_re_measure_reads_the_peaks_within_its_seconds():
    """The peaks are read first and the comparison gets what is left of the re-measure's seconds:
    read after a comparison that had taken them all, GPT-2's eager generate() under the profiler
    ran the search 16 s past its budget."""
    events: list[Any] = []

    class SlowPeaks:
        test = KeepTest()

        def peaks(self, best, trial):
            time.sleep(0.6)
            events.append("peaks")
            return 100, 80

        def compare(self, best, trial, seconds, deadline=None, threshold=None):
            events.append(("compare", seconds, deadline - time.perf_counter()))
            samples = Measurement(tuple([0.01] * 7))
            return Comparison(samples, samples, speedup=2.0, speedup_ci=(1.9, 2.1)), {}

    composer = types.SimpleNamespace(baseline="eager", build=lambda chosen: ("trial", (), None))
    final = final_check(SlowPeaks(), composer, {"model": None}, 2.0)
    assert events[0] == "peaks"
    _, seconds, left = events[1]
    assert seconds <= 1.45 and left <= 1.45  # 2 s less the 0.6 s the peaks took
    assert final.peaks == (100, 80) and not final.slower


def test_a_trial_whose_setup_overran_its_slot_still_gets_the_rounds_a_comparison_takes(tmp_path):
    """Its setup spent, a trial cut at 3 rounds cannot decide a 10% effect: its deadline moves on by a
    comparison's rounds at the current best's speed, within what the budget leaves for trials."""
    search = Search(
        accel.load(PLANTED / "opt_dead_work.py"), _recipe("test.cheap"), _context(tmp_path), budget_seconds=60
    )
    search.costs = dataclasses.replace(search.costs, call_seconds=1.2, best_call_seconds=0.3)
    began = time.perf_counter()
    deadline = search._rounds_floor(began - 5.0)  # the slot ended while the setup ran
    rounds = dataclasses.replace(search.costs, call_seconds=0.3).comparison_seconds()
    assert rounds > 5.0 and deadline - began == pytest.approx(rounds, abs=0.5)
    assert search._rounds_floor(began + 40.0) == began + 40.0  # a slot that holds them is left as it is
    search.started = began - 55.0  # 5 s left: the floor stops at the budget's end
    assert search._rounds_floor(began) <= began + 5.0 + 0.01


def test_a_trial_is_timed_until_its_interval_decides_and_a_guard_failure_is_not(tmp_path, monkeypatch):
    asked: dict[str, Any] = {}

    def compare(self, best, trial, seconds, deadline=None, threshold=None):
        breaks = any(c.optimizer == "test.int8_breaks" for c in trial[1])
        asked.setdefault("test.int8_breaks" if breaks else "test.cheap", threshold)  # the trial, not the final
        samples = Measurement(tuple([0.01] * 7))
        ratio = _speed(trial[0]) / _speed(best[0])
        return Comparison(samples, samples, speedup=ratio, speedup_ci=(ratio * 0.97, ratio * 1.03)), {}

    monkeypatch.setattr(Timing, "compare", compare)
    recipe = _recipe("test.cheap", "test.int8_breaks", order="as_written")
    run_engine(accel.load(PLANTED / "opt_dead_work.py"), recipe, _context(tmp_path), budget_seconds=30)
    assert asked == {"test.cheap": recipe.keep.min_speedup, "test.int8_breaks": None}  # failed the guard: timed briefly
