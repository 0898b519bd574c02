"""torch.profiler's start/stop notes stay off a terminal that shows accel's live status line. The
status redraws (a carriage return and the line, no newline) are written to stderr by Rich's refresh
thread while accel captures stderr around a profiler start, so a note lands on the same line as a
redraw; seen watching `accel optimize` on a terminal ("...diagnosing (accel profile)USDT:...
profiler_start"). A child process runs a real profiler inside notes_dropped with such a redraw
written first; the same without the capture prints the notes, so the test proves it catches them."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import os, sys
from torch.profiler import ProfilerActivity, profile
from accel.core.profiler_notes import notes_dropped, quiet_profiler

quiet = sys.argv[1] == "quiet"
os.write(2, b"\\r\\x1b[2K* [1s, 3m19s left] optimize: diagnosing (accel profile)")
if quiet:
    with quiet_profiler(profile(activities=[ProfilerActivity.CPU])):
        pass
    with notes_dropped():
        os.write(2, b"\\r\\x1b[2K* [2s, 3m18s left] optimize: measuring stages")
        with profile(activities=[ProfilerActivity.CPU]):
            os.write(2, b"\\r\\x1b[2K* [3s, 3m17s left] optimize: measuring stages")
        os.write(2, b"a warning the user should see\\n")
else:
    with profile(activities=[ProfilerActivity.CPU]):
        pass
"""


def _stderr(mode: str) -> str:
    done = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_notes_glued_to_a_status_redraw_are_dropped_and_the_rest_kept():
    loud = _stderr("loud")
    assert "profiler_start" in loud and "profiler_stop" in loud, loud  # the notes exist to be dropped
    quiet = _stderr("quiet")
    assert "USDT" not in quiet and "profiler_" not in quiet, quiet
    assert "optimize: diagnosing (accel profile)" in quiet and "[3s, 3m17s left]" in quiet
    assert "a warning the user should see" in quiet
