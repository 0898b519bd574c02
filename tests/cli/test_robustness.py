"""The command line under stress: output paths checked before any work, `--json -`, exit codes that
tell CI what happened, a hung stage ended by the watchdog, SIGTERM handled as Ctrl-C, and the
conventions (--version, -h, exit codes in --help, no torch.profiler notes on the terminal)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from accel.cli import app
from accel.cli.live import PROGRESS_LINE
from accel.cli.paths import check_output_paths
from accel.core.errors import AccelError

runner = CliRunner()
CONSOLE_SCRIPT = Path(sys.executable).with_name("accel")
TINY = "import torch\nmodel = torch.nn.Linear(4, 2)\nexample_inputs = (torch.ones(2, 4),)\n"
# A pipeline whose decode never returns; it starts a child of its own, which must not outlive accel.
HUNG_DECODE = """import os, subprocess, time, torch, accel
child = subprocess.Popen(["sleep", "600"])
open(os.environ["CHILD_PID_FILE"], "w").write(str(child.pid))
def decode(raw):
    time.sleep({seconds})
    return torch.ones(4)
pipeline = accel.Pipeline(model=torch.nn.Linear(4, 2), source=list(range(64)), decode=decode, batch_size=2)
"""


def accel_process(cwd: Path, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(CONSOLE_SCRIPT), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def error_lines(stderr: str) -> list[str]:
    """stderr's lines less the progress lines a piped command prints ("[3s, 57s left] profile: ...")."""
    return [line for line in stderr.splitlines() if line.strip() and not PROGRESS_LINE.match(line)]


# --- output paths, before the work --------------------------------------------------------------
def test_a_path_that_could_not_be_written_is_refused_naming_its_flag(tmp_path):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "a_folder").mkdir()
    check_output_paths({"--json": tmp_path / "new" / "deeper" / "r.json", "--out": tmp_path / "a_folder", "--x": None})
    cases = {
        "--json": (tmp_path / "a_folder", "is a folder, not a file"),
        "--html": (tmp_path / "a_file" / "r.html", "is a file, not a folder"),
        "--out": (tmp_path / "a_file", "is a file, not a folder"),
    }
    for flag, (path, problem) in cases.items():
        with pytest.raises(AccelError, match=problem) as caught:
            check_output_paths({flag: path})
        assert caught.value.message.startswith(f"{flag} {path}")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_folder_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(AccelError, match="is not writable"):
            check_output_paths({"--trace-dir": locked / "trace"})
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize(
    "args",
    [
        ["profile", "model.py", "--json", "folder"],
        ["profile", "model.py", "--html", "file.txt/r.html"],
        ["profile", "model.py", "--trace-dir", "file.txt"],
        ["optimize", "model.py", "--out", "file.txt"],
        ["bench", "model.py", "--save-baseline", "folder"],
        ["gate", "model.py", "--baseline", "b.json", "--junit", "folder"],
    ],
)
def test_commands_check_their_output_paths_before_measuring(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.py").write_text(TINY)
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("x")
    began = time.monotonic()
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    flag = next(a for a in args if a.startswith("--") and a != "--baseline")
    assert f"error: {flag} " in result.output, result.output
    assert time.monotonic() - began < 10  # refused before any measuring
    assert not (tmp_path / "accel-runs").exists()


# --- --json - -----------------------------------------------------------------------------------
def test_json_dash_writes_the_report_to_stdout_and_torch_notes_stay_off_the_terminal(tmp_path):
    (tmp_path / "model.py").write_text(TINY)
    done = subprocess.run(
        [str(CONSOLE_SCRIPT), "profile", "model.py", "--budget", "1", "--json", "-"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["schema"] == "accel.profile/1"
    assert "accel profile model" in done.stderr  # the human report went to stderr
    assert "USDT" not in done.stderr and "profiler_start" not in done.stderr
    assert not (tmp_path / "-").exists()


# --- exit codes ---------------------------------------------------------------------------------
def test_a_script_that_calls_os_exit_is_exit_2_not_a_silent_success(tmp_path):
    (tmp_path / "train.py").write_text("import os\nprint('training')\nos._exit(0)\n")
    done = subprocess.run(
        [str(CONSOLE_SCRIPT), "optimize", "train.py", "--budget", "5"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and "os._exit(0)" in lines[0] and "nothing was written" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_a_trace_that_was_not_written_fails_rather_than_printing_trace(tmp_path, monkeypatch):
    import accel.profiling.trace as trace

    monkeypatch.setattr(trace, "tensorboard_trace_handler", lambda folder: lambda prof: None)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.py").write_text(TINY)
    result = runner.invoke(app, ["profile", "model.py", "--budget", "1", "--trace-dir", "t"])
    assert result.exit_code == 2, result.output
    assert "--trace-dir t: torch.profiler wrote no trace there" in result.output
    assert "trace:" not in result.output


# --- conventions --------------------------------------------------------------------------------
def test_version_short_help_and_exit_codes_in_help():
    from accel._version import __version__

    for flag in ("--version", "-V"):
        result = runner.invoke(app, [flag])
        assert result.exit_code == 0 and result.output.strip() == f"accel {__version__}"
    assert "Exit codes:" in runner.invoke(app, ["-h"]).output
    for command in ("profile", "optimize", "bench", "gate", "verify", "calibrate", "run", "recipes"):
        result = runner.invoke(app, [command, "-h"])
        assert result.exit_code == 0, (command, result.output)
        text = " ".join(result.output.split())
        assert "Exit codes: 0 done" in text and "130 interrupted" in text, command
        assert "<bool>" not in result.output and "╭" not in result.output
        assert not re.search(r" [.,;:](\s|$)", text), (command, text)  # no stray space left by eaten markup
    assert "1 a regression" in " ".join(runner.invoke(app, ["gate", "-h"]).output.split())
    assert runner.invoke(app, ["cache", "clear", "-h"]).exit_code == 0
    assert "--install-completion" in runner.invoke(app, ["--help"]).output


def test_no_color_and_a_pipe_give_plain_text(tmp_path):
    (tmp_path / "model.py").write_text("")
    for env in ({"NO_COLOR": "1"}, {}):
        done = subprocess.run(
            [str(CONSOLE_SCRIPT), "profile", "nowhere.py"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "TERM": "xterm-256color", **env},
        )
        assert done.returncode == 2 and "\x1b[" not in done.stderr, done.stderr


# --- the watchdog and signals -------------------------------------------------------------------
@pytest.mark.slow
def test_a_hung_decode_is_named_with_its_stack_and_ends_the_run(tmp_path):
    (tmp_path / "hung.py").write_text(HUNG_DECODE.format(seconds="10**6"))
    child_pid_file = tmp_path / "child.pid"
    began = time.monotonic()
    process = accel_process(
        tmp_path, "profile", "hung.py", "--budget", "2", "--no-trace", CHILD_PID_FILE=str(child_pid_file)
    )
    try:
        out, err = process.communicate(timeout=90)
    finally:
        process.kill()
    assert process.returncode == 2, err
    assert time.monotonic() - began < 75
    first = error_lines(err)[0]
    assert first.startswith("error: the pipeline's decode stage has not returned"), err
    assert "time.sleep" in err  # the stack of the hung call
    assert not running(int(child_pid_file.read_text()))


@pytest.mark.slow
def test_sigterm_is_handled_as_ctrl_c_and_leaves_no_process(tmp_path):
    (tmp_path / "slow.py").write_text(HUNG_DECODE.format(seconds="0.5"))
    child_pid_file = tmp_path / "child.pid"
    process = accel_process(
        tmp_path, "profile", "slow.py", "--budget", "60", "--no-trace", CHILD_PID_FILE=str(child_pid_file)
    )
    try:
        deadline = time.monotonic() + 60
        while not child_pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("interrupted: stopped by SIGTERM"), err
    assert not running(int(child_pid_file.read_text()))
