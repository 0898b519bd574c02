"""`accel profile model.onnx`: ONNX Runtime sessions, synthesized inputs, per-node cost model."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import accel
from accel.cli import app
from accel.core.errors import AccelError
from accel.profiling.onnx import parse_dynamic_dims


def save(path, nodes, inputs, outputs, initializers):
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture
def wide_onnx(tmp_path):
    """A batch-1 GEMV over 96 MB of fp32 weights: memory-bound."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((2048, 4096)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((4096, 4096)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu1"),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
    ]
    return save(
        tmp_path / "wide.onnx",
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 2048])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4096])],
        [w1, w2],
    )


@pytest.fixture
def tiny_onnx(tmp_path):
    """300 nodes on 16-element tensors: overhead."""
    constant = numpy_helper.from_array(np.full((16,), 0.1, np.float32), "c")
    nodes, previous = [], "x"
    for i in range(150):
        nodes.append(helper.make_node("Add", [previous, "c"], [f"a{i}"], name=f"add{i}"))
        nodes.append(helper.make_node("Tanh", [f"a{i}"], [f"t{i}"], name=f"tanh{i}"))
        previous = f"t{i}"
    return save(
        tmp_path / "tiny.onnx",
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, ["batch", 16])],
        [constant],
    )


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    from accel.core.calibration import calibrated_machine

    patch = pytest.MonkeyPatch()
    # one calibration for the session, shared by the modules that profile (same base temp dir)
    patch.setenv("ACCEL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "accel-xdg"))
    try:
        yield calibrated_machine()
    finally:
        patch.undo()


def test_wide_onnx_gemv_is_memory_bandwidth_with_weights_from_the_graph(wide_onnx, machine):
    report = accel.profile(wide_onnx, machine=machine, budget_seconds=2.0)
    assert report.mode == "onnx"
    assert report.primary == "memory_bandwidth"
    cost = report.to_dict()["cost"]
    # ORT pre-packs MatMul weights and leaves them out of its profile: the bytes come from the graph
    assert cost["weight_bytes"] == (2048 + 4096) * 4096 * 4
    assert cost["flops"] >= 2 * (2048 + 4096) * 4096
    assert report.finding("memory_bandwidth").recommendations[0] == "onnx.int8_dynamic"


def test_tiny_onnx_nodes_are_overhead_and_dynamic_dims_set_shapes(tiny_onnx, machine):
    report = accel.profile(tiny_onnx, machine=machine, budget_seconds=2.0, dynamic_dims={"batch": 4})
    assert report.primary == "overhead"
    assert report.finding("overhead").evidence["op_count_per_call"] == 300
    assert report.to_dict()["onnx"]["inputs"] == {"x": [4, 16]}


def test_cli_profiles_onnx_with_dynamic_dim_and_rejects_bad_ones(tiny_onnx, tmp_path, monkeypatch, machine):
    monkeypatch.setattr("accel.profiling.run.describe_machine", lambda device=None: machine)
    out = tmp_path / "r.json"
    result = CliRunner().invoke(
        app, ["profile", str(tiny_onnx), "--dynamic-dim", "batch=2", "--budget", "1", "--json", str(out), "--no-trace"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["onnx"]["inputs"]["x"] == [2, 16]
    bad = CliRunner().invoke(app, ["profile", str(tiny_onnx), "--dynamic-dim", "batch", "--no-trace"])
    assert bad.exit_code == 2
    unknown = CliRunner().invoke(app, ["profile", str(tiny_onnx), "--dynamic-dim", "seq=8", "--no-trace"])
    assert unknown.exit_code == 2


def test_parse_dynamic_dims():
    assert parse_dynamic_dims(["batch=8", "seq = 3"]) == {"batch": 8, "seq": 3}
    for bad in (["batch"], ["=3"], ["batch=0"], ["batch=x"]):
        with pytest.raises(AccelError):
            parse_dynamic_dims(bad)


def test_a_corrupt_onnx_file_is_a_load_error(tmp_path, machine):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(AccelError):
        accel.profile(path, machine=machine)
