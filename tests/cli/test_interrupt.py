"""Ctrl-C and SIGTERM during `accel optimize` keep what was measured: sent to a real console-script
run once its first row is printed, the run stops at the next safe point, prints the rows decided so
far, writes the JSON marked partial and a lock of what was kept and verified (or says none was),
exits 130, and leaves no process and no temporary folder behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.paths import PLANTED

CONSOLE_SCRIPT = Path(sys.executable).with_name("accel")
# onnx.int8_dynamic first (it usually wins on the wide MLP: a kept row before the signal), then
# candidates that keep the search busy long after the first row.
RECIPE = (
    "name: long\ntarget: latency\norder: as_written\nguard: {min_cosine: 0.995}\n"
    "rules: [{name: r, try: [onnx.int8_dynamic, compile, onnx.runtime, openvino.runtime, precision.bf16]}]\n"
)
FIRST_ROW_TIMEOUT_SECONDS = 240


def _run_until_first_row(tmp_path: Path) -> tuple[subprocess.Popen, list[str]]:
    file = tmp_path / "wide.py"
    shutil.copy(PLANTED / "opt_wide_mlp.py", file)
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "COLUMNS": "80", "TMPDIR": str(tmp_path / "tmp")}
    command = [str(CONSOLE_SCRIPT), "optimize", str(file), "--recipe", "recipe.yaml", "--threads", "1"]
    command += ["--budget", "300", "--json", "result.json", "--out", "out"]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stderr is not None
    lines: list[str] = []
    began = time.monotonic()
    while time.monotonic() - began < FIRST_ROW_TIMEOUT_SECONDS:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("[1/5] "):  # the first candidate's row: it was decided
            return process, lines
    process.kill()
    pytest.fail("no row was printed: " + "".join(lines))


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
def test_a_signal_keeps_the_rows_a_partial_json_and_the_verified_lock(tmp_path, machine, sent):
    process, lines = _run_until_first_row(tmp_path)
    process.send_signal(sent)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stdout + "".join(lines) + stderr
    assert _group_gone(process.pid), "a process accel started outlived it"
    # Nothing at all: ONNX Runtime's telemetry file is kept out too (accel.core.library_env).
    left = [p.name for p in (tmp_path / "tmp").iterdir()]
    assert not left, f"temporary files were left: {left}"
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["partial"] is True and data["steps"]
    assert data["steps"][0]["optimizer"] == "onnx.int8_dynamic"
    assert data["message"].startswith("interrupted after ") and " of 5 candidates" in data["message"]
    for step in data["steps"]:  # the rows decided so far are printed
        assert step["optimizer"] in stdout
    assert "interrupted after" in stdout
    by = "Ctrl-C" if sent == signal.SIGINT else "SIGTERM"
    assert f"stopped by {by}" in stderr
    lock = yaml.safe_load((tmp_path / "out" / "accel.lock.yaml").read_text())
    kept = [entry["optimizer"] for entry in lock["optimizations"]]
    assert kept == data["kept"]
    accepted = {s["optimizer"] for s in data["steps"] if s["verdict"] == "accepted"}
    assert set(kept) <= accepted  # only what passed the guard and the keep test
    if not kept:
        assert "nothing was kept" in data["message"]
    else:
        assert "kept and verified" in data["message"]
