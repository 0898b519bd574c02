"""The trace accel writes is one a real TensorBoard (PyTorch Profiler plugin) lists and Perfetto reads."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import accel
from tests.paths import PLANTED


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_trace_is_valid_chrome_trace_json(tmp_path):
    trace_dir = tmp_path / "runs" / "data_repeats"
    report = accel.profile(PLANTED / "data_repeats.py", trace_dir=trace_dir, budget_seconds=2.0)
    assert report.trace_dir == str(trace_dir)
    (trace_file,) = trace_dir.glob("*.pt.trace.json")
    trace = json.loads(trace_file.read_text())
    events = trace["traceEvents"]
    assert all("ph" in e and "name" in e for e in events)
    complete = [e for e in events if e["ph"] == "X"]
    assert complete and all("ts" in e and "dur" in e for e in complete)
    names = {e["name"] for e in complete}
    assert any(n.startswith("ProfilerStep#") for n in names)
    assert any(n.startswith("aten::") for n in names)


@pytest.mark.slow
def test_real_tensorboard_lists_the_run(tmp_path):
    logdir = tmp_path / "accel-runs"
    accel.profile(PLANTED / "data_repeats.py", trace_dir=logdir / "data_repeats", budget_seconds=2.0)
    port = free_port()
    tensorboard = Path(sys.executable).parent / "tensorboard"
    server = subprocess.Popen(
        [str(tensorboard), "--logdir", str(logdir), "--port", str(port), "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # The profiler plugin loads runs in spawned worker processes: its own process group lets the
        # test stop all of them, not only the server.
        start_new_session=True,
    )
    try:
        runs: list = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/data/plugin/pytorch_profiler/runs", timeout=5
                ) as response:
                    runs = json.loads(response.read())["runs"]
            except (urllib.error.URLError, ConnectionError, OSError, KeyError, ValueError):
                runs = []
            if "data_repeats" in runs:
                break
            assert server.poll() is None, "tensorboard exited"
            time.sleep(0.5)
        assert "data_repeats" in runs
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/data/plugin/pytorch_profiler/views?run=data_repeats", timeout=10
        ) as response:
            assert json.loads(response.read())
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
