"""The suite's own guard (tests/conftest.py): a test that leaves a process running fails the run,
on one pytest process and on pytest-xdist's workers alike (`make test` runs two), and the process
is ended."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.security.test_hangs import processes_naming

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one process", "two xdist workers"])
def test_a_process_left_running_fails_the_run_and_is_ended(tmp_path, workers):
    marker = uuid.uuid4().hex
    (tmp_path / "test_leaks.py").write_text(
        "import subprocess, sys\n"
        "def test_leaks():\n"
        f"    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)', '{marker}'],"
        " start_new_session=True)\n"
        "def test_fine():\n    pass\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "tests.conftest",
            *workers,
            str(tmp_path / "test_leaks.py"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "processes left running by the tests (killed)" in done.stdout, done.stdout
    assert marker in done.stdout
    assert processes_naming(marker) == []
