"""`accel profile` through the CLI: each bundled example names its bottleneck; options work."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from accel.cli import app
from tests.paths import EXAMPLES, PLANTED

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
    output, data = profile_json(tmp_path, str(PLANTED / "data_repeats.py"), "--trace-dir", str(trace_dir))
    assert data["trace_dir"] == str(trace_dir)
    assert list(trace_dir.glob("*.pt.trace.json"))
    assert "tensorboard --logdir" in " ".join(output.split())


def test_profile_help_lists_the_options():
    result = runner.invoke(app, ["profile", "--help"])
    assert result.exit_code == 0
    for option in ("--json", "--trace-dir", "--no-trace", "--budget"):
        assert option in result.output


MINIMAL_BATCH_16 = """import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))
example_inputs = (torch.randn(16, 256),)
"""


def _number(text: str) -> float:
    value, unit = text.replace(",", "").split()[:2] if " " in text else (text.replace(",", ""), "")
    return float(value) * {"s": 1.0, "ms": 1e-3, "us": 1e-6, "": 1.0}[unit]


def test_minimal_form_figures_agree_per_sample(tmp_path):
    """Batch 16 in the minimal form: the stage table's per-sample figures are per sample, and its
    rate is the throughput line's; per sample x 16 is the latency per batch."""
    import re
    from io import StringIO

    from rich.console import Console

    import accel
    from accel.cli.render_profile import render_profile

    path = tmp_path / "minimal16.py"
    path.write_text(MINIMAL_BATCH_16)
    report = accel.profile(path, budget_seconds=1.0)
    out = StringIO()
    render_profile(report, Console(file=out, width=100, color_system=None))
    text = out.getvalue()
    throughput = float(re.search(r"throughput ([\d,.]+) samples/s", text).group(1).replace(",", ""))
    latency = _number(re.search(r"latency per batch: median ([\d.]+ [mu]?s)", text).group(1))
    row = next(line for line in text.splitlines() if line.startswith("│ model"))
    cells = [cell.strip() for cell in row.strip("│").split("│")]
    per_sample, rate = _number(cells[1]), float(cells[2].replace(",", ""))
    # printed with 3-4 significant digits: agree to rounding
    assert rate == pytest.approx(throughput, rel=0.01)
    assert per_sample * 16 == pytest.approx(latency, rel=0.01)
    assert per_sample * throughput == pytest.approx(1.0, rel=0.01)
    assert report.stages[0].per_sample_seconds == pytest.approx(report.latency["median_seconds"] / 16)
