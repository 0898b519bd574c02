"""On a terminal, `accel optimize` shows each candidate's row live on stderr as it is decided; when
stdout is that same terminal the result does not print the candidates again (the summary only).
Piped (tests/cli/test_progress.py) both are kept: a log reader may have only one of the streams."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from accel.cli.common import THEME
from accel.cli.live import shares_terminal
from accel.cli.render_optimize import render_optimize
from tests.cli.test_progress import LONG_REASON, _data
from tests.paths import PLANTED

CONSOLE_SCRIPT = Path(sys.executable).with_name("accel")
CONTROL_CODES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
RECIPE = "name: one\ntarget: latency\norder: as_written\nrules: [{name: r, try: [precision.bf16]}]\n"


def _terminal_file(fd: int):
    return os.fdopen(os.dup(fd), "w")


def test_two_consoles_on_one_terminal_share_it_and_a_pipe_never_does():
    main, follower = pty.openpty()
    other_main, other_follower = pty.openpty()
    read_end, write_end = os.pipe()
    files = [_terminal_file(fd) for fd in (follower, follower, other_follower, write_end)]
    try:
        stdout, stderr, elsewhere, piped = (Console(file=f, force_terminal=None) for f in files)
        assert shares_terminal(stdout, stderr)
        assert not shares_terminal(stdout, elsewhere)  # another terminal
        assert not shares_terminal(piped, stderr) and not shares_terminal(stderr, piped)
    finally:
        for f in files:
            f.close()
        for fd in (main, follower, other_main, other_follower, read_end, write_end):
            os.close(fd)


def test_the_result_without_its_rows_keeps_the_summary():
    buffer = StringIO()
    out = Console(file=buffer, width=80, color_system=None, theme=THEME)
    render_optimize(_data(), out, steps_shown=True)
    text = buffer.getvalue()
    assert "the candidates are above" in text and "Candidates" not in text
    assert " ".join(LONG_REASON.split()[:4]) not in " ".join(text.split())  # the row is not repeated
    assert "baseline 2.00 ms per call" in text and "no candidate helped" in text


def _run_on_a_terminal(command: list[str], cwd: Path) -> tuple[int, str]:
    """Run `command` with stdout and stderr on one 80-column pseudo-terminal; its exit code and output."""
    main, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 80, 0, 0))
    env = {**os.environ, "COLUMNS": "80", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the terminal's last writer has closed it
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(main)
        code = process.wait(timeout=300)
    return code, CONTROL_CODES.sub("", b"".join(chunks).decode(errors="replace"))


@pytest.mark.slow
def test_optimize_on_one_terminal_prints_each_row_once(tmp_path, machine):
    file = tmp_path / "gate.py"
    file.write_text((PLANTED / "gate_2ms.py").read_text())
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    command = [str(CONSOLE_SCRIPT), "optimize", str(file), "--recipe", "recipe.yaml", "--threads", "1"]
    code, text = _run_on_a_terminal(command + ["--budget", "20", "--out", "out"], tmp_path)
    assert code == 0, text
    assert text.count("[1/1] precision.bf16") == 1  # the live row
    assert "the candidates are above" in text and "Candidates" not in text  # not printed again
    assert "accel optimize" in text and "lock:" in text  # the summary is
