"""Ctrl-C and SIGTERM before anything is decided, through the real console script: `accel profile`
stopped during a measuring pass after its stages were measured keeps them (the terminal shows the
Stages table, the JSON is marked partial), and `accel optimize` stopped before its search decided
a candidate says in one line that nothing was decided and no lock was written. Both exit 130 and
leave no process and no temporary folder behind. The signal is sent once the progress line naming
the phase is on stderr, to a model slow enough (a sleep per call) that the phase is still running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

CONSOLE_SCRIPT = Path(sys.executable).with_name("accel")
# Half a second per call: each pass makes several calls, so a signal sent just after the pass's
# progress line lands inside the pass.
SLOW_PIPELINE = """\
import time

import torch
from torch import nn


class Slow(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(16, 16)

    def forward(self, x):
        time.sleep(0.5)
        return self.linear(x)


model = Slow().eval()
example_inputs = (torch.randn(2, 16),)
"""
RECIPE = "name: one\ntarget: latency\norder: as_written\nrules: [{name: r, try: [precision.bf16]}]\n"
PHASE_TIMEOUT_SECONDS = 180
# After the phase's line: long enough to be inside the pass, short against one pass's calls.
SETTLE_SECONDS = 0.3


def _start(tmp_path: Path, *arguments: str) -> subprocess.Popen:
    (tmp_path / "slow.py").write_text(SLOW_PIPELINE)
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "COLUMNS": "80", "TMPDIR": str(tmp_path / "tmp")}
    return subprocess.Popen(
        [str(CONSOLE_SCRIPT), *arguments],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for(process: subprocess.Popen, phase: str) -> list[str]:
    """The stderr lines up to the progress line naming `phase`."""
    assert process.stderr is not None
    lines: list[str] = []
    began = time.monotonic()
    while time.monotonic() - began < PHASE_TIMEOUT_SECONDS:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if line.rstrip().endswith(phase):
            return lines
    process.kill()
    pytest.fail(f"no progress line ending in {phase!r}: " + "".join(lines))


def _interrupt(process: subprocess.Popen, phase: str, sent: signal.Signals) -> tuple[str, str]:
    lines = _wait_for(process, phase)
    time.sleep(SETTLE_SECONDS)
    process.send_signal(sent)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stdout + "".join(lines) + stderr
    return stdout, "".join(lines) + stderr


def _nothing_left(tmp_path: Path, pgid: int) -> None:
    for _ in range(50):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("a process accel started outlived it")
    # A runtime may leave a small file of its own in TMPDIR (a session id), and torch keeps its inductor
    # cache there (torchinductor_USER, made on import, kept by design): other folders are accel's.
    left = [
        p.name
        for p in (tmp_path / "tmp").iterdir()
        if (p.is_dir() and not p.name.startswith("torchinductor_")) or p.name.startswith("accel")
    ]
    assert not left, f"temporary folders were left: {left}"


@pytest.mark.slow
@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
def test_profile_stopped_in_a_pass_keeps_the_stages_as_a_partial_report(tmp_path, machine, sent):
    process = _start(tmp_path, "profile", "slow.py", "--budget", "10", "--no-trace", "--json", "report.json")
    stdout, stderr = _interrupt(process, "counting FLOPs and bytes per op", sent)
    _nothing_left(tmp_path, process.pid)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["partial"] is True and data["interrupted_pass"] == "cost"
    assert [stage["name"] for stage in data["stages"]] == ["model"] and data["stages"][0]["seconds"] > 0
    assert "ops" not in data  # the cost pass was stopped: no op counts
    assert "Stages" in stdout and "model" in stdout  # the terminal shows the stages measured
    assert "interrupted during the cost pass" in stdout
    by = "Ctrl-C" if sent == signal.SIGINT else "SIGTERM"
    assert f"interrupted: stopped by {by} during the cost pass" in stderr
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_optimize_stopped_before_its_search_says_nothing_was_decided(tmp_path, machine):
    arguments = ["optimize", "slow.py", "--recipe", "recipe.yaml", "--threads", "1", "--budget", "60"]
    process = _start(tmp_path, *arguments, "--json", "result.json", "--out", "out")
    stdout, stderr = _interrupt(process, "timing the baseline", signal.SIGINT)
    _nothing_left(tmp_path, process.pid)
    interrupted = [line for line in stderr.splitlines() if line.startswith("interrupted:")]
    assert interrupted == [
        "interrupted: stopped by Ctrl-C; while timing the baseline: nothing was decided yet, no lock written"
    ]
    assert not (tmp_path / "out").exists() and not (tmp_path / "result.json").exists()
    assert "Traceback" not in stderr and stdout == ""
