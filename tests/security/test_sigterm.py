"""SIGTERM is handled as Ctrl-C by every command that runs user code: the run ends with one
`interrupted: stopped by SIGTERM` line and exit 130, the processes it started (and those its pipeline
started) are ended, and $TMPDIR is left empty.

profile, optimize and gate are covered elsewhere (tests/cli/test_robustness.py,
tests/cli/test_interrupt.py, tests/security/test_leftovers.py); this file covers bench, run and
verify, each stopped while the pipeline's code runs. A command that ends without a signal ends what
its pipeline left running too (verify loads the pipeline in accel's own process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from accel.cli.live import PROGRESS_LINE
from tests.security.test_hangs import processes_naming

CONSOLE_SCRIPT = Path(sys.executable).with_name("accel")
# The pipeline's import starts a long-lived child that names the test's marker.
STARTS_A_CHILD = (
    "import os, subprocess, sys, time, torch\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', os.environ['ACCEL_TEST_MARKER']])\n"
)
SLOW_PIPELINE = STARTS_A_CHILD + (
    "class Slow(torch.nn.Module):\n"
    "    def forward(self, x):\n"
    "        time.sleep(0.05)\n"
    "        return x * 2\n"
    "model = Slow()\n"
    "example_inputs = (torch.ones(2, 4),)\n"
)
# A pipeline whose import runs long after starting its child: verify is stopped while it loads it
# (on a slow forward its timing can decide, and end, before the signal).
SLOW_IMPORT = STARTS_A_CHILD + "time.sleep(600)\n" + SLOW_PIPELINE.split("\n", 2)[2]
SLOW_SCRIPT = STARTS_A_CHILD + (
    "from torch.utils.data import DataLoader\n"
    "for batch in DataLoader(torch.randn(4096, 4), batch_size=4):\n"
    "    time.sleep(0.05)\n"
)
# Seconds the pipeline's code gets to run once its child is up, before the signal.
RUNNING_SECONDS = 3.0
START_TIMEOUT_SECONDS = 180


def write_locks(folder: Path) -> None:
    """folder/pipe-lock (a pipeline lock keeping runtime.threads) and folder/script-lock (a script
    lock keeping the DataLoader as it was), as accel optimize writes them."""
    from accel.optimizing.lock import SCRIPT_LOCK, Lock, LockEntry, file_sha256, write_lock
    from accel.optimizing.runtimes import current_versions

    threads = LockEntry("runtime.threads", {}, {"threads": 1})
    write_lock(
        folder / "pipe-lock",
        Lock(
            pipeline_file="pipe.py",
            pipeline_sha256=file_sha256(folder / "pipe.py"),
            pipeline_path="pipe.py",
            entries=(threads,),
            target="latency",
            speedup=1.5,
            min_speedup=1.1,
            versions=current_versions([threads]),
        ),
    )
    loader = LockEntry("script.loader", {"threads": 1}, {"num_workers": 0})
    write_lock(
        folder / "script-lock",
        Lock(
            pipeline_file="train.py",
            pipeline_sha256=file_sha256(folder / "train.py"),
            pipeline_path="train.py",
            entries=(loader,),
            target="latency",
            kind=SCRIPT_LOCK,
            versions=current_versions([loader]),
        ),
    )


COMMANDS = {
    "bench": ("bench", "pipe.py", "--budget", "120"),
    "run": ("run", "train.py", "--lock", "script-lock"),
    "verify": ("verify", "pipe-lock", "--budget", "120"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_sigterm_ends_the_run_its_processes_and_its_temporary_files(tmp_path, name):
    work, temp = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    temp.mkdir()
    (work / "pipe.py").write_text(SLOW_IMPORT if name == "verify" else SLOW_PIPELINE)
    (work / "train.py").write_text(SLOW_SCRIPT)
    write_locks(work)
    marker = f"accel-sigterm-{os.getpid()}-{time.monotonic_ns()}"
    process = subprocess.Popen(
        [str(CONSOLE_SCRIPT), *COMMANDS[name]],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(temp), "ACCEL_TEST_MARKER": marker},
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not processes_naming(marker) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert processes_naming(marker), f"the pipeline never started its child (exit {process.poll()})"
        time.sleep(RUNNING_SECONDS)
        assert process.poll() is None, "the command ended before the signal"
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=90)
    finally:
        process.kill()
        for pid in processes_naming(marker):
            os.kill(pid, signal.SIGKILL)
    lines = [line for line in err.splitlines() if line.strip() and not PROGRESS_LINE.match(line)]
    assert process.returncode == 130, err
    assert lines[-1].startswith("interrupted: stopped by SIGTERM"), err
    assert "Traceback" not in err
    assert processes_naming(marker) == []
    assert [p.name for p in temp.iterdir()] == []


@pytest.mark.slow
def test_verify_ends_what_the_pipeline_it_loaded_left_running(tmp_path):
    (tmp_path / "pipe.py").write_text(SLOW_PIPELINE)
    (tmp_path / "train.py").write_text(SLOW_SCRIPT)
    write_locks(tmp_path)
    marker = f"accel-verify-{os.getpid()}-{time.monotonic_ns()}"
    try:
        with open(tmp_path / "stderr", "w") as stderr:  # a file: a child left holding it cannot block the wait
            done = subprocess.run(
                [str(CONSOLE_SCRIPT), "verify", "pipe-lock", "--budget", "10"],
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                timeout=300,
                env={**os.environ, "ACCEL_TEST_MARKER": marker},
            )
        assert done.returncode in (0, 1), (tmp_path / "stderr").read_text()
        assert processes_naming(marker) == []
    finally:
        for pid in processes_naming(marker):
            os.kill(pid, signal.SIGKILL)
