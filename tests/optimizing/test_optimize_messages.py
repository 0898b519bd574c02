"""Optimizer reasons that must not contradict the pipeline: a conv net that ONNX Runtime already
runs is not said to have 'no 2-D convolution'."""

from __future__ import annotations

import accel
from accel.core.machine import describe_machine
from accel.optimizing.optimizers import OPTIMIZERS, Context, make_config
from tests.paths import EXAMPLES


def test_channels_last_on_a_conv_net_kept_in_onnx_runtime_says_it_runs_outside_torch(tmp_path):
    context = Context(machine=describe_machine(), workdir=tmp_path)
    conv_net = accel.load(EXAMPLES / "conv_net.py")
    channels_last = OPTIMIZERS.get("layout.channels_last")
    assert channels_last.applicable(conv_net, context) is None  # a conv net: it applies
    ort = OPTIMIZERS.get("onnx.runtime")
    in_ort = ort.apply(conv_net, make_config(ort, {}), context).pipeline
    reason = channels_last.applicable(in_ort, context)
    assert reason is not None and "no 2-D convolution" not in reason
    assert "runs outside torch now (OrtModel)" in reason, reason


def test_a_zero_peak_under_onnx_runtime_is_said_not_measured():
    from rich.console import Console

    from accel.cli.render_optimize import render_optimize

    data = {
        "target": "conv_net",
        "recipe": "latency",
        "objective": "latency",
        "threads": 2,
        "steps": [],
        "baseline": {"median_seconds": 0.017, "samples_per_call": 1, "peak_bytes": 8 * 2**20},
        "final": {"median_seconds": 0.009, "samples_per_call": 1, "peak_bytes": 0},
        "speedup": 1.83,
        "speedup_ci": [1.78, 1.97],
        "kept": ["onnx.runtime"],
        "message": "kept onnx.runtime",
        "lock_path": None,
    }
    console = Console(width=200, record=True)
    render_optimize(data, console)
    text = console.export_text()
    assert "peak memory 8.0 MiB -> not measured (onnx.runtime keeps its memory outside torch)" in text, text
    assert "-> 0 B" not in text
    # a pipeline kept in torch that allocates nothing keeps its 0 B
    render_optimize({**data, "kept": ["cache.results"]}, console)
    assert "peak memory 8.0 MiB -> 0 B" in console.export_text()
