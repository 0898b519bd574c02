"""Ctrl-C and SIGTERM during `accel optimize SCRIPT` keep what the rounds run so far decided, as the
pipeline search does (tests/cli/test_interrupt.py): sent to a real console-script run once its
fourth round has begun (three whole rounds: enough to judge each setting), the run stops, prints
the rows, writes the JSON marked partial and a lock of what was kept (or an empty one), exits 130,
and leaves no process behind."""

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
import yaml

from accel.core.errors import PipelineError
from accel.optimizing.script import stopped_by_signal

CONSOLE_SCRIPT = Path(sys.executable).with_name("accel")
# A pass of 8 batches, each 8 samples of ~2 ms of Python and a 10 ms step: a trial takes a fraction
# of a second, and a worker overlaps the two.
LOADER_BOUND = """\
import time
import torch
from torch.utils.data import DataLoader, Dataset

class Slow(Dataset):
    def __len__(self):
        return 64
    def __getitem__(self, index):
        end = time.perf_counter() + 0.002
        while time.perf_counter() < end:
            pass
        return torch.full((4,), float(index))

torch.manual_seed(0)
for batch in DataLoader(Slow(), batch_size=8, shuffle=True):
    time.sleep(0.01)
"""
ROUND_TIMEOUT_SECONDS = 240


def _run_until_round_four(tmp_path: Path) -> tuple[subprocess.Popen, list[str]]:
    (tmp_path / "train.py").write_text(LOADER_BOUND)
    command = [str(CONSOLE_SCRIPT), "optimize", "train.py", "--threads", "1", "--budget", "600"]
    command += ["--json", "result.json", "--out", "out"]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "80"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stderr is not None
    lines: list[str] = []
    began = time.monotonic()
    while time.monotonic() - began < ROUND_TIMEOUT_SECONDS:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if "optimize: round 4/" in line:
            return process, lines
    process.kill()
    pytest.fail("the fourth round never began: " + "".join(lines))


def _group_gone(pgid: int) -> bool:
    for _ in range(50):
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_script_search_keeps_its_rows_a_partial_json_and_the_lock(tmp_path, sent):
    process, lines = _run_until_round_four(tmp_path)
    process.send_signal(sent)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stdout + "".join(lines) + stderr
    assert _group_gone(process.pid), "a process accel started outlived it"
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["partial"] is True and data["mode"] == "script"
    assert re.match(r"interrupted in round [45] of ", data["message"]), data["message"]
    # three whole rounds: every setting was judged, none skipped for want of rounds
    assert data["steps"] and all(s["verdict"] in ("accepted", "reverted") for s in data["steps"]), data["steps"]
    for step in data["steps"]:  # the rows are printed
        assert step["optimizer"] in stdout
    by = "Ctrl-C" if sent == signal.SIGINT else "SIGTERM"
    assert f"stopped by {by}" in stderr
    lock = yaml.safe_load((tmp_path / "out" / "accel.lock.yaml").read_text())
    kept = [entry["optimizer"] for entry in lock["optimizations"]]
    assert kept == data["kept"]
    accepted = [s for s in data["steps"] if s["verdict"] == "accepted"]
    assert len(accepted) == len(kept) <= 1  # only what passed the guard and the keep test
    if kept:
        assert lock["optimizations"][0]["state"] == data["chosen"] and " kept " in data["message"]
    else:
        assert "nothing was kept: the lock is empty" in data["message"]


def test_a_script_that_exits_on_ctrl_c_counts_as_interrupted():
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise SystemExit(1)  # noqa: B904 - as Lightning's Trainer exits
    except SystemExit as exited:
        error = PipelineError("train.py exited with status 1", "run it with python")
        error.__cause__ = exited
    assert stopped_by_signal(error)
    assert not stopped_by_signal(PipelineError("train.py raised ValueError: no", "fix it"))
