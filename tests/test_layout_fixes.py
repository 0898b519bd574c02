"""Bugs the layout review found, each proven fixed: --script honours --html and --budget, a skipped
hardware pass is named in the terminal, onnx.int8_static keeps no per-run state on the shared
instance, the inline bench launcher gives the caller its folder, environment and threads back, and
the calibration reaches the optimizers through their context."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch
from rich.console import Console

import accel
from accel.cli.render_profile import render_profile
from accel.core.machine import describe_machine
from accel.gating.bench import BenchConfig, Side, run_replicate
from accel.optimizing.optimizers import OPTIMIZERS, Context
from accel.profiling.report import Report

ROOT = Path(__file__).parent.parent
PLANTED = Path(__file__).parent / "planted"

ENDLESS_SCRIPT = """
import torch
from torch.utils.data import DataLoader, TensorDataset

data = DataLoader(TensorDataset(torch.randn(64, 8)), batch_size=8)
model = torch.nn.Linear(8, 2)
for epoch in range(10**6):  # a long training run: the budget ends it
    for (x,) in data:
        model(x).sum().backward()
"""


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_script_mode_writes_html_and_stops_at_the_budget(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(ENDLESS_SCRIPT)
    html = tmp_path / "report.html"
    report = accel.profile(script, as_script=True, html_path=html, budget_seconds=1.0, trace_dir=None)
    assert report.mode == "script"
    assert html.is_file() and "<html" in html.read_text().lower()
    run = report.extra["script"]
    assert run["stopped_at_budget"] is True
    assert run["run_seconds"] < 30


def test_a_skipped_hardware_pass_is_named_in_the_terminal():
    report = Report(
        target="t",
        machine=describe_machine("cpu"),
        stages=[],
        samples_per_s=1.0,
        findings=[],
        extra={"hardware_passes_skipped": {"cost": "RuntimeError: no dispatch modes here"}},
    )
    out = io.StringIO()
    render_profile(report, Console(file=out, width=100, color_system=None))
    assert "cost pass skipped: RuntimeError: no dispatch modes here" in out.getvalue()


@pytest.mark.slow
def test_int8_static_keeps_no_per_run_state_on_the_registered_instance(tmp_path):
    pytest.importorskip("onnxruntime")
    optimizer = OPTIMIZERS.get("onnx.int8_static")
    before = dict(vars(optimizer))
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    pipeline = accel.Pipeline(model=model, inputs=(torch.randn(8, 16),))
    config = optimizer.Config()
    applied = optimizer.apply(pipeline, config, Context(machine=describe_machine("cpu"), workdir=tmp_path))
    assert applied.state["calibration_batches"] == 1
    assert dict(vars(optimizer)) == before


def test_inline_bench_gives_the_caller_its_folder_environment_and_threads_back(tmp_path):
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    cwd, threads = os.getcwd(), torch.get_num_threads()
    side = Side(file=PLANTED / "gate_mlp.py", cwd=folder, env=(("ACCEL_TEST_SIDE", "1"),))
    config = BenchConfig(replicates=1, launcher="inline", threads=2 if threads != 2 else 3)
    data = run_replicate(side, config, timing=False, counts=True)
    assert data["counts"]["flops"] > 0
    assert os.getcwd() == cwd
    assert "ACCEL_TEST_SIDE" not in os.environ
    assert torch.get_num_threads() == threads


def test_optimize_hands_the_calibrated_machine_to_the_optimizers(monkeypatch):
    """precision.* read the half-precision speed from context.machine: it must be the calibrated one."""
    from accel.optimizing.search import engine

    class Stop(Exception):
        pass

    seen = []

    def capture(pipeline, recipe, context, **kwargs):
        seen.append(context.machine)
        raise Stop

    monkeypatch.setattr(engine, "run_engine", capture)
    with pytest.raises(Stop):
        accel.optimize(PLANTED / "opt_wide_mlp.py", "latency", budget_seconds=5.0)
    (machine,) = seen
    assert machine.calibrated and {"fp32", "bf16"} <= set(machine.peak_gflops_by_dtype)
    assert machine.threads == torch.get_num_threads()
