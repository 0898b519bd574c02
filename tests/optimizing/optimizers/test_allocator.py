"""runtime.allocator: glibc malloc's thresholds pinned; timed in fresh processes, re-applied by the lock.

Page faults are counted, not timed: a fresh process running a small CNN takes thousands a call with
glibc's defaults and none once the lock's entry pinned the thresholds, whatever the machine's speed.
The engine's and verify's use of fresh processes is checked by what their steps record.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import accel
from accel.core import allocator
from accel.core.machine import describe_machine
from accel.optimizing.fresh import FreshTimer
from accel.optimizing.lock import LockEntry, read_lock
from accel.optimizing.optimizers import OPTIMIZERS, Context
from accel.optimizing.recipes import parse_recipe
from accel.optimizing.run import optimize
from accel.optimizing.search.engine import ACCEPTED, REVERTED
from accel.optimizing.search.verify import verify_lock
from tests.paths import ROOT

CNN = ROOT / "examples" / "conv_net.py"  # built to have it: ~4,500 faults a call
MLP = ROOT / "examples" / "wide_mlp.py"  # built not to: batch-1 activations fit in what malloc keeps
RESNET = ROOT / "tests" / "real" / "resnet_classifier.py"  # transformers ResNet, random init
PINNED = LockEntry("runtime.allocator", {}, {"trim_threshold": 1 << 30, "mmap_threshold": 32 << 20})

pytestmark = pytest.mark.skipif(allocator.glibc_version() is None, reason="glibc malloc only")


def context(tmp_path: Path, path: Path | None) -> Context:
    return Context(machine=describe_machine(), workdir=tmp_path, pipeline_path=path)


def test_a_page_fault_costs_what_the_kernel_charges_for_zeroing_a_page():
    cost = allocator.seconds_per_fault()
    assert 1e-8 < cost < 1e-4


@pytest.mark.slow
def test_the_lock_entry_pins_the_thresholds_and_the_faults_go(tmp_path):
    timer = FreshTimer(CNN, tmp_path / "accel.lock.yaml", "latency")
    plain, pinned = timer.run(()), timer.run((PINNED,))
    assert plain["faults_per_call"] > 500, plain
    assert pinned["faults_per_call"] < plain["faults_per_call"] / 20, (plain, pinned)


@pytest.mark.slow
@pytest.mark.parametrize("path", [CNN, RESNET], ids=["conv_net", "transformers_resnet"])
def test_applies_where_a_fresh_process_faults_every_call(path, tmp_path):
    optimizer = OPTIMIZERS.get("runtime.allocator")
    assert optimizer.applicable(accel.load(path), context(tmp_path, path)) is None


@pytest.mark.slow
def test_not_applicable_where_the_faults_cost_little(tmp_path):
    reason = OPTIMIZERS.get("runtime.allocator").applicable(accel.load(MLP), context(tmp_path, MLP))
    assert reason is not None and "page faults per call" in reason


def test_not_applicable_when_pinned_already_or_built_in_memory(tmp_path, monkeypatch):
    optimizer = OPTIMIZERS.get("runtime.allocator")
    pipeline = accel.load(MLP)
    assert "built in memory" in optimizer.applicable(pipeline, context(tmp_path, None))
    for name, value in allocator.ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    assert "already pins" in optimizer.applicable(pipeline, context(tmp_path, MLP))


@pytest.mark.slow
def test_the_engine_and_verify_time_it_in_fresh_processes(tmp_path):
    file = tmp_path / "conv_net.py"
    shutil.copy(CNN, file)
    recipe = parse_recipe(
        {
            "name": "allocator",
            "target": "latency",
            "keep": {"passes": 100000},
            "rules": [{"name": "allocator", "try": ["runtime.allocator"]}],
        }
    )
    # A fresh-process candidate may take 15% of the budget: its trial was predicted at ~45 s beside
    # another test on a 2-core AVX2 EPYC, just past 15% of 300 s (skipped), so 600 s leaves it room.
    result = optimize(file, recipe, out_dir=tmp_path / "out", budget_seconds=600)
    (step,) = result.steps
    assert step.verdict in (ACCEPTED, REVERTED), step.reason
    assert "fresh processes" in step.reason
    # The evidence: the plain side faults every call, the pinned side does not.
    faults = step.notes["faults_per_call"]
    assert faults["before"] > 500 and faults["after"] < faults["before"] / 20, faults
    kept = [e.optimizer for e in read_lock(Path(result.lock_path)).entries]
    if step.verdict == ACCEPTED:
        # the final check against the baseline cannot be in-process either (and it may still revert:
        # the lock holds the allocator only when that check passed too)
        assert result.result.final["timed_in"].startswith("fresh processes"), result.result.final
        assert kept in ([], ["runtime.allocator"]), kept
    if kept:
        verified = verify_lock(result.lock_path, file, budget_seconds=60)
        assert verified.whole.speedup is not None, verified.whole.reason
