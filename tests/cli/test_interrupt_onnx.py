"""Ctrl-C and SIGTERM during `accel profile model.onnx`, through the real console script: stopped in
the node profiling pass after the model was timed, the run keeps the timing (the terminal shows the
Stages table, the JSON is marked partial and names the pass), exits 130 and leaves no process and no
temporary folder (ORT's profile files are written in one). The model is three 1536x1536 matrix
products, so one run takes a good part of a second and the signal lands inside the pass."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.cli.test_interrupt_profile import CONSOLE_SCRIPT, _interrupt, _nothing_left

SIDE = 1536


def _slow_onnx(path: Path) -> None:
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("MatMul", ["a", "b"], ["y1"]),
        helper.make_node("MatMul", ["y1", "b"], ["y2"]),
        helper.make_node("MatMul", ["y2", "b"], ["y"]),
    ]
    square = [SIDE, SIDE]
    graph = helper.make_graph(
        nodes,
        "slow",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, square) for name in ("a", "b")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, square)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())


@pytest.mark.slow
@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
def test_onnx_profile_stopped_in_node_profiling_keeps_the_timing(tmp_path, machine, sent):
    pytest.importorskip("onnxruntime")
    _slow_onnx(tmp_path / "slow.onnx")
    (tmp_path / "tmp").mkdir()
    process = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "profile", "slow.onnx", "--budget", "1", "--json", "report.json"],
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "80", "TMPDIR": str(tmp_path / "tmp")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    stdout, stderr = _interrupt(process, "profiling ONNX Runtime nodes", sent)
    _nothing_left(tmp_path, process.pid)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["partial"] is True and data["interrupted_pass"] == "nodes"
    assert [stage["name"] for stage in data["stages"]] == ["model"] and data["stages"][0]["seconds"] > 0
    assert "ops" not in data  # the node profiling was stopped: no per-node costs
    assert "Stages" in stdout and "model" in stdout
    assert "interrupted during the nodes pass" in stdout
    by = "Ctrl-C" if sent == signal.SIGINT else "SIGTERM"
    assert f"interrupted: stopped by {by} during the nodes pass" in stderr
    assert "Traceback" not in stderr
