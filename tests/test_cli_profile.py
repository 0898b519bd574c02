"""`accel profile` through the CLI: each bundled example names its bottleneck; options work."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from accel.cli import app

EXAMPLES = Path(__file__).parent.parent / "examples"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _one_thread():
    # Two intra-op threads on a busy 2-core machine spin against other processes; one keeps the
    # planted ratios stable (conftest restores the count).
    torch.set_num_threads(1)


def profile_json(tmp_path: Path, *args: str) -> tuple[str, dict]:
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["profile", "--json", str(out), "--budget", "4", *args])
    assert result.exit_code == 0, result.output
    return result.output, json.loads(out.read_text())


@pytest.mark.parametrize(
    "example, kind",
    [
        pytest.param("image_pipeline.py", "input_decoding", marks=pytest.mark.slow),
        ("sequence_encoder.py", "padding"),
        ("request_stream.py", "repeated_inputs"),
    ],
)
def test_example_names_its_bottleneck(example, kind, tmp_path):
    output, data = profile_json(tmp_path, str(EXAMPLES / example), "--no-trace")
    assert data["primary"] == kind
    assert f"bottleneck: {kind}" in output
    assert abs(sum(s["share"] for s in data["stages"]) - 1.0) < 1e-6
    data_path = ("data_loading", "input_decoding", "padding", "repeated_inputs")
    assert sum(f["share"] for f in data["findings"] if f["kind"] in data_path) <= 1.0 + 1e-9


def test_training_script_with_arguments_after_double_dash(tmp_path):
    output, data = profile_json(
        tmp_path, str(EXAMPLES / "train_script.py"), "--no-trace", "--", "--rows", "256", "--batch-size", "32"
    )
    assert data["mode"] == "script"
    assert data["primary"] == "data_loading"
    assert data["end_to_end"]["samples"] == 256
    assert "Script loop" in output and "bottleneck: data_loading" in output


def test_trace_dir_option(tmp_path):
    trace_dir = tmp_path / "traces" / "mine"
    output, data = profile_json(
        tmp_path, str(Path(__file__).parent / "planted" / "data_repeats.py"), "--trace-dir", str(trace_dir)
    )
    assert data["trace_dir"] == str(trace_dir)
    assert list(trace_dir.glob("*.pt.trace.json"))
    assert "tensorboard --logdir" in " ".join(output.split())


def test_profile_help_lists_the_options():
    result = runner.invoke(app, ["profile", "--help"])
    assert result.exit_code == 0
    for option in ("--json", "--trace-dir", "--no-trace", "--budget"):
        assert option in result.output
