"""Nothing hangs: a bench replicate whose forward never returns is reported (the stage, its stack,
exit 2) within its hang limit plus a margin, and a child the pipeline starts that inherits the
worker's stdout cannot keep accel waiting; no process is left behind."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from accel.core.watchdog import hang_limit_seconds
from accel.gating.bench import BenchConfig, BenchError, Side, hang_seconds_for, run_replicate
from accel.gating.process import DEFAULT_HANG_SECONDS

HUNG_FORWARD = textwrap.dedent("""
    import time
    import torch

    class Stuck(torch.nn.Module):
        def forward(self, x):
            if not hasattr(self, "called"):
                self.called = True
                return x
            stuck_in_forward()

    def stuck_in_forward():
        time.sleep(3600)

    model = Stuck()
    example_inputs = (torch.randn(2, 4),)
""")
# A pipeline whose import never returns.
HUNG_IMPORT = textwrap.dedent("""
    import time
    import torch

    def stuck_in_import():
        time.sleep(3600)

    stuck_in_import()
    model = torch.nn.Linear(4, 4)
    example_inputs = (torch.randn(2, 4),)
""")
# A pipeline whose import starts a long-lived child holding the worker's stdout and stderr open.
STDOUT_HOLDER = textwrap.dedent("""
    import subprocess, sys
    import torch
    # A Python sleeper carrying the marker (GNU sleep exits at once on the extra argument); it
    # inherits the worker's stdout, which the bench protocol must not wait on.
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "{marker}"])
    open("{marker}.pid", "a").write(str(holder.pid) + " ")
    model = torch.nn.Linear(4, 4).eval()
    example_inputs = (torch.randn(2, 4),)
""")
HANG_SECONDS = 3.0
# Starting a worker (python, torch) on a loaded 2-core machine, on top of the hang limit.
MARGIN_SECONDS = 90.0
QUICK = BenchConfig(replicates=1, warmup_calls=1, min_calls=2, max_calls=4, budget_seconds=0.05, threads=1)


def processes_naming(marker: str) -> list[int]:
    """Live processes whose command line contains `marker` (Linux /proc)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = entry.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in text and state not in ("Z", "X"):
            found.append(int(entry.parent.name))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["spawn", "fork"])
def test_a_hung_forward_in_a_replicate_is_reported_with_its_stage_and_stack(tmp_path, capfd, launcher):
    file = tmp_path / "stuck.py"
    file.write_text(HUNG_FORWARD)
    config = BenchConfig(
        replicates=1,
        warmup_calls=2,
        min_calls=2,
        budget_seconds=0.05,
        threads=1,
        hang_seconds=HANG_SECONDS,
        launcher=launcher,
    )
    began = time.monotonic()
    with pytest.raises(BenchError, match="model stage has not returned") as raised:
        run_replicate(Side(file.resolve()), config, timing=True)
    assert time.monotonic() - began < HANG_SECONDS + MARGIN_SECONDS
    assert "taken as hung" in raised.value.message
    assert "stuck_in_forward" in capfd.readouterr().err  # the stack of the stuck call, on the user's stderr


@pytest.mark.slow
def test_a_hung_import_in_a_replicate_is_reported_within_the_same_limit(tmp_path, capfd):
    file = tmp_path / "stuck_import.py"
    file.write_text(HUNG_IMPORT)
    began = time.monotonic()
    with pytest.raises(BenchError, match="import stage has not returned") as raised:
        run_replicate(Side(file.resolve()), dataclasses.replace(QUICK, hang_seconds=HANG_SECONDS), timing=True)
    assert time.monotonic() - began < HANG_SECONDS + MARGIN_SECONDS  # not the 600 s backstop
    assert "taken as hung" in raised.value.message
    assert "stuck_in_import" in capfd.readouterr().err


def test_a_budget_bounds_the_replicates_hang_limit():
    assert hang_seconds_for(None) == DEFAULT_HANG_SECONDS
    assert hang_seconds_for(5.0) == hang_limit_seconds(5.0) < DEFAULT_HANG_SECONDS  # accel bench --budget 5
    assert hang_seconds_for(1000.0) == hang_limit_seconds(1000.0)  # a slow model's bench may ask for more
    # the gate's budget bounds the adding of pairs: it only tightens the limit
    assert hang_seconds_for(5.0, tighten_only=True) == hang_limit_seconds(5.0)
    assert hang_seconds_for(300.0, tighten_only=True) == DEFAULT_HANG_SECONDS


@pytest.mark.slow
def test_a_child_holding_the_workers_stdout_does_not_block_bench_and_is_ended(tmp_path):
    marker = f"accel-holder-{os.getpid()}-{time.monotonic_ns()}"
    file = tmp_path / "holder.py"
    file.write_text(STDOUT_HOLDER.format(marker=tmp_path / marker))
    began = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "accel", "bench", str(file), "--replicates", "1", "--threads", "1"],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "latency median" in done.stdout
        assert time.monotonic() - began < 200
        assert processes_naming(marker) == []
        started = (tmp_path / f"{marker}.pid").read_text().split()
        assert started, "the pipeline's import never started its child"  # so the test cannot pass vacuously
    finally:
        for pid in processes_naming(marker):
            os.kill(pid, 9)
