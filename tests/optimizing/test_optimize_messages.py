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
