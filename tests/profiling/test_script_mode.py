"""Script mode: a plain training script runs as __main__, unchanged, and its loader wait is measured."""

import json
import sys

import pytest
import torch
from torch.utils.data.dataloader import _BaseDataLoaderIter

import accel
from accel.core.errors import PipelineError
from accel.core.loading import Script, find_target
from accel.profiling.script import LoaderCall, end_to_end_from_calls
from tests.paths import PLANTED, ROOT

TRAIN_SCRIPT = ROOT / "examples" / "train_script.py"
WELL_FED_SCRIPT = PLANTED / "data_script_well_fed.py"


@pytest.fixture(autouse=True)
def _one_thread():
    # Two intra-op threads on a busy 2-core machine spin against other processes and make a 0.5 ms
    # step take 100 ms; one thread keeps the planted ratios stable (conftest restores the count).
    torch.set_num_threads(1)


def test_training_script_is_found_as_a_script_without_importing_it():
    target = find_target(TRAIN_SCRIPT, ("--rows", "64"))
    assert target == Script(path=TRAIN_SCRIPT, args=("--rows", "64"))


def test_loader_bound_training_script_names_data_loading():
    original_next = _BaseDataLoaderIter.__next__
    report = accel.profile(TRAIN_SCRIPT, args=("--rows", "384", "--epochs", "1"))
    assert _BaseDataLoaderIter.__next__ is original_next
    assert report.mode == "script"
    assert report.primary == "data_loading"
    finding = report.finding("data_loading")
    assert finding.evidence["wait_share"] > 0.5
    assert [s.name for s in report.stages] == ["dataloader", "step"]
    assert abs(sum(s.share for s in report.stages) - 1.0) < 1e-6
    e2e = report.extra["end_to_end"]
    assert e2e["samples"] == 384
    assert e2e["wait_seconds"] + e2e["compute_seconds"] == pytest.approx(e2e["seconds"], rel=1e-6)
    assert report.stages[0].share == pytest.approx(e2e["wait_share"], rel=1e-6)


def test_well_fed_training_script_has_no_data_loading_above_low():
    report = accel.profile(WELL_FED_SCRIPT, args=("2",))
    assert report.mode == "script"
    assert report.extra["end_to_end"]["samples"] == 512
    finding = report.finding("data_loading")
    assert finding is not None and finding.severity in ("low", "info")
    assert report.primary != "data_loading"


@pytest.mark.slow
def test_workers_start_up_is_kept_apart_and_the_trace_marks_loader_steps(tmp_path):
    trace_dir = tmp_path / "runs" / "train"
    report = accel.profile(TRAIN_SCRIPT, args=("--rows", "256", "--workers", "2"), trace_dir=trace_dir)
    e2e = report.extra["end_to_end"]
    assert e2e["num_workers"] == 2
    assert e2e["startup_seconds"] > 0
    (trace_file,) = trace_dir.glob("*.pt.trace.json")
    names = {event.get("name", "") for event in json.loads(trace_file.read_text())["traceEvents"]}
    assert any(name.startswith("ProfilerStep#") for name in names)
    assert any(name.startswith("enumerate(DataLoader)") for name in names)


def test_script_that_raises_is_one_pipeline_error(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text("import torch\nraise RuntimeError('out of cheese')\n")
    with pytest.raises(PipelineError, match="crash.py raised RuntimeError: out of cheese"):
        accel.profile(script)


def test_script_exit_codes(tmp_path):
    ok = tmp_path / "ok.py"
    ok.write_text("import sys\nprint('hello')\nsys.exit(0)\n")
    assert accel.profile(ok).mode == "script"
    failing = tmp_path / "fails.py"
    failing.write_text("import sys\nsys.exit(3)\n")
    with pytest.raises(PipelineError, match="exited with status 3"):
        accel.profile(failing)


def test_script_runs_once_as_main_with_its_arguments(tmp_path):
    log = tmp_path / "log.txt"
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import sys\nwith open(sys.argv[1], 'a') as f:\n    f.write(__name__ + ' ' + sys.argv[2] + '\\n')\n"
    )
    argv = list(sys.argv)
    accel.profile(script, args=(str(log), "hello"))
    assert log.read_text() == "__main__ hello\n"
    assert sys.argv == argv


def test_end_to_end_from_calls_adds_up():
    calls = [
        LoaderCall(0.0, 0.5, 4, 2, True),  # start-up: kept apart
        LoaderCall(0.6, 0.7, 4, 2, False),
        LoaderCall(0.9, 1.0, 4, 2, False),
        LoaderCall(1.2, 1.2, 0, 2, False, exhausted=True),
    ]
    e2e = end_to_end_from_calls(calls)
    assert e2e.startup_seconds == pytest.approx(0.5)
    assert e2e.seconds == pytest.approx(0.7)
    assert e2e.wait_seconds == pytest.approx(0.2)
    assert e2e.compute_seconds == pytest.approx(0.5)
    assert e2e.samples == 12 and e2e.batches == 3
    assert end_to_end_from_calls([]) is None


def test_script_flag_runs_a_file_that_defines_model_as_a_script(tmp_path):
    from typer.testing import CliRunner

    from accel.cli import app

    script = tmp_path / "train_top_level.py"
    script.write_text(
        "import torch\nfrom torch.utils.data import DataLoader\n"
        "model = torch.nn.Linear(4, 1)\n"
        "for batch in DataLoader(torch.randn(64, 4), batch_size=8):\n    model(batch)\n"
    )
    plain = CliRunner().invoke(app, ["profile", str(script), "--no-trace"])
    # issue 10: decided from the syntax tree, no longer refused after running; run once as a script
    assert plain.exit_code == 0 and "run once as a script" in " ".join(plain.output.split())
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["profile", "--script", "--no-trace", "--json", str(out), str(script)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["mode"] == "script" and data["end_to_end"]["samples"] == 64


def test_script_mode_writes_nothing_into_the_scripts_folder(tmp_path, monkeypatch):
    user = tmp_path / "user"
    user.mkdir()
    (user / "helper.py").write_text(
        "import torch\ndef batches():\n    return torch.utils.data.DataLoader(torch.randn(32, 4), batch_size=8)\n"
    )
    (user / "train.py").write_text("from helper import batches\nfor b in batches():\n    b.sum()\n")
    monkeypatch.chdir(tmp_path)
    report = accel.profile(user / "train.py")
    assert report.mode == "script" and report.extra["end_to_end"]["samples"] == 32
    assert sorted(p.name for p in user.iterdir()) == ["helper.py", "train.py"]


# A second of set-up before the loop (imports, building a model), then short steps.
SLOW_START = """
import time
import torch
from torch.utils.data import DataLoader
time.sleep(1.5)
for epoch in range(10**6):
    for batch in DataLoader(torch.randn(64, 4), batch_size=8):
        time.sleep(0.01)
"""

# Each step takes longer than the whole budget.
SLOW_STEPS = """
import time
import torch
from torch.utils.data import DataLoader
for batch in DataLoader(torch.randn(64, 4), batch_size=8):
    time.sleep(1.2)
"""


def test_the_budget_counts_from_the_first_batch_not_from_the_imports(tmp_path):
    script = tmp_path / "slow_start.py"
    script.write_text(SLOW_START)
    report = accel.profile(script, as_script=True, budget_seconds=1.0, trace_dir=None)
    run = report.extra["script"]
    assert run["stopped_at_budget"] is True and run["loop_started_seconds"] >= 1.5
    # a second of steps, not the half-second the set-up left over: tens of batches, a real step time
    assert run["loader_calls"] >= 20, run
    assert report.extra["end_to_end"]["compute_seconds"] > 0.1
    assert not any(note.startswith("too few steps") for note in report.extra.get("notes", []))


def test_a_loop_stopped_after_too_few_steps_abstains_and_names_a_budget(tmp_path):
    script = tmp_path / "slow_steps.py"
    script.write_text(SLOW_STEPS)
    report = accel.profile(script, as_script=True, budget_seconds=1.0, trace_dir=None)
    assert report.extra["script"]["loader_calls"] < 4
    (note,) = [n for n in report.extra.get("notes", []) if n.startswith("too few steps")]
    assert "measured" in note and "give --budget " in note
    assert int(note.rsplit(" ", 1)[1]) >= 20  # 20 batches at 1.2 s each
    assert report.stages == [] and report.finding("data_loading") is None and report.primary == "none"


def test_the_terminal_says_no_verdict_not_no_bottleneck_when_too_few_steps_were_measured(tmp_path):
    from typer.testing import CliRunner

    from accel.cli import app

    script = tmp_path / "slow_steps.py"
    script.write_text(SLOW_STEPS)
    done = CliRunner().invoke(app, ["profile", str(script), "--budget", "1", "--no-trace"], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    assert "no verdict: too few steps were measured" in done.output
    assert "no bottleneck above low severity" not in done.output
