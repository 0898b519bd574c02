"""What a person watching `accel optimize` / `accel profile` on a terminal sees of the status line:
one line, cut with an ellipsis rather than wrapped (a wrapped status line is redrawn as two lines on
every spinner frame); clocks that run between events (a phase that lasts a minute must not keep
showing the elapsed time and the budget left of its start); after a decided row, a status that says
it was decided (never "checking that it applies" of a candidate already shown); and two variants of
one optimizer that never read as the same row twice. The terminal-only parts are checked on a real
pseudo-terminal through the console script as well."""

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
from rich.spinner import Spinner

from accel.cli import live
from accel.cli.common import THEME
from accel.cli.live import LiveProgress, StatusLine
from accel.cli.render_optimize import decided_row, render_steps
from accel.core.progress import ProgressEvent
from tests.cli.test_progress import _data

CONSOLE_SCRIPT = Path(sys.executable).with_name("accel")
LONG_PHASE = "calibrating the machine (once per machine and torch version) and a little more"


class Clock:
    def __init__(self) -> None:
        self.seconds = 100.0

    def __call__(self) -> float:
        return self.seconds


@pytest.fixture
def clock(monkeypatch):
    ticking = Clock()
    monkeypatch.setattr(live, "now", ticking)
    return ticking


def _rendered(renderable, width: int = 60) -> str:
    """As the terminal shows it: a status line inside the spinner Rich's status draws it in."""
    if isinstance(renderable, StatusLine):
        renderable = Spinner("dots", text=renderable)
    buffer = StringIO()
    Console(file=buffer, width=width, color_system=None, theme=THEME).print(renderable)
    return buffer.getvalue()[2:] if isinstance(renderable, Spinner) else buffer.getvalue()  # the frame


def test_the_status_line_is_one_line_cut_with_an_ellipsis(clock):
    progress = LiveProgress(Console(file=StringIO()), "optimize", budget_seconds=90)
    text = _rendered(StatusLine(progress, ProgressEvent(LONG_PHASE, elapsed_seconds=0.0)))
    assert text.count("\n") == 1 and text.rstrip().endswith("…"), text
    assert text.startswith("[0s, 1m30s left] optimize: calibrating")


def test_the_status_clocks_run_between_events(clock):
    progress = LiveProgress(Console(file=StringIO()), "optimize", budget_seconds=90)
    line = StatusLine(progress, ProgressEvent("analyzing", elapsed_seconds=14.0))
    assert _rendered(line).startswith("[14s, 1m30s left] optimize: analyzing")
    clock.seconds += 17  # the same phase, 17 s later: the line is drawn again on the next refresh
    assert _rendered(line).startswith("[31s, 1m13s left] optimize: analyzing")


def test_before_any_event_the_status_has_no_clock_to_run_backwards(clock):
    progress = LiveProgress(Console(file=StringIO()), "optimize", budget_seconds=90)
    assert _rendered(StatusLine(progress, None)).strip() == "optimize"


def test_a_decided_row_moves_the_live_status_on(clock):
    terminal = Console(file=StringIO(), force_terminal=True, width=80, color_system=None)
    row = {**_data()["steps"][0], "optimizer": "batch.trim_padding", "verdict": "skipped", "params": {}}
    with LiveProgress(terminal, "optimize", render_row=decided_row, unit="candidate") as progress:
        progress.event(ProgressEvent("batch.trim_padding: checking that it applies", 3, 7, elapsed_seconds=38.0))
        progress.event(ProgressEvent("batch.trim_padding: skipped", 3, 7, elapsed_seconds=38.0, row=row))
        assert progress.status is not None
        shown = _rendered(progress.status.renderable, width=120)
    assert "candidate 3/7: batch.trim_padding: skipped" in shown and "checking" not in shown, shown
    assert "[3/7] batch.trim_padding" in terminal.file.getvalue()  # the row itself, above the status


def test_two_variants_of_one_optimizer_read_as_two_rows():
    data = _data()
    base = {**data["steps"][0], "optimizer": "runtime.threads", "verdict": "skipped"}
    data["steps"] = [{**base, "params": {}}, {**base, "params": {"threads": 1}}]
    for width in (80, 140):
        buffer = StringIO()
        render_steps(data, Console(file=buffer, width=width, force_terminal=True, color_system=None, theme=THEME))
        text = buffer.getvalue()
        assert "runtime.threads (threads=1)" in text, text
    assert "runtime.threads (threads=1)" in _rendered(decided_row(data["steps"][1], 5, 7), width=80)
    assert "[4/7] runtime.threads  skipped" in _rendered(decided_row(data["steps"][0], 4, 7), width=80)


SLOW_PIPELINE = """\
import time

import torch
from torch import nn


class Slow(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(16, 16)

    def forward(self, x):
        time.sleep(0.4)
        return self.linear(x)


model = Slow().eval()
example_inputs = (torch.randn(2, 16),)
"""
STATUS = re.compile(r"\[(\d+)s, (\d+)s left\] profile: ([a-zA-Z ]+)")
COLUMNS = 50


@pytest.mark.slow
def test_on_a_narrow_terminal_the_status_stays_one_line_and_its_clock_runs(tmp_path, machine):
    (tmp_path / "slow.py").write_text(SLOW_PIPELINE)
    main, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, COLUMNS, 0, 0))
    env = {**os.environ, "COLUMNS": str(COLUMNS), "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    command = [str(CONSOLE_SCRIPT), "profile", "slow.py", "--budget", "6", "--no-trace"]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower
    )
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
    raw = b"".join(chunks).decode(errors="replace")
    assert code == 0, raw
    live_part = raw[: raw.index("\x1b[?25h")]  # the status line's frames, up to the cursor shown again
    assert "\x1b[1A" not in live_part, live_part  # never a second line to move back up over
    assert "USDT" not in raw and "profiler_start" not in raw, raw  # torch.profiler's notes, glued to a redraw
    assert "…" in live_part  # "counting FLOPs and bytes per op" with its clocks is cut at 50 columns
    clocks: dict[str, set[tuple[str, str]]] = {}
    for elapsed, left, phase in STATUS.findall(live_part):
        clocks.setdefault(phase.strip(), set()).add((elapsed, left))
    assert max(len(seen) for seen in clocks.values()) >= 2, clocks  # a phase whose clocks moved while it ran


def test_recording_the_baselines_outputs_is_its_own_phase(tmp_path, monkeypatch):
    """Seen on BERT: the status said "analyzing" (the profile's last phase) for 26 s while the engine
    ran the baseline over the data to record the outputs every candidate is checked against."""
    import accel
    from accel.core.machine import describe_machine
    from accel.optimizing.optimizers import OPTIMIZERS, Context
    from accel.optimizing.recipes.schema import parse_recipe
    from accel.optimizing.search import engine
    from tests.optimizing import test_engine as planted
    from tests.paths import PLANTED

    monkeypatch.setitem(OPTIMIZERS._items, planted.NeverApplies.name, planted.NeverApplies())
    recipe = parse_recipe(
        {"name": "t", "target": "latency", "order": "as_written", "rules": [{"name": "p", "try": ["test.never"]}]}
    )
    phases: list[str] = []
    recorded = engine.Validator

    def validator(*args, **kwargs):
        phases.append("(the baseline's outputs recorded)")
        return recorded(*args, **kwargs)

    monkeypatch.setattr(engine, "Validator", validator)
    context = Context(machine=describe_machine(), workdir=tmp_path)
    baseline = accel.load(PLANTED / "opt_dead_work.py")
    engine.run_engine(baseline, recipe, context, budget_seconds=20, progress=phases.append)
    at = phases.index("(the baseline's outputs recorded)")
    assert phases[at - 1].startswith("recording the baseline's outputs"), phases
    assert phases[at + 1] == "timing the baseline", phases


def test_a_candidate_skipped_for_budget_is_not_said_to_be_tried_when_named_again(tmp_path, monkeypatch):
    """Seen on BERT: "[1/7] batch.bucket skipped: needs ~11 s more budget", then "[2/7] batch.bucket
    skipped: already tried (rule 'recommended')" of a candidate that never ran."""
    import accel
    from accel.core.machine import describe_machine
    from accel.optimizing.optimizers import OPTIMIZERS, Context
    from accel.optimizing.recipes.schema import parse_recipe
    from accel.optimizing.search import engine
    from tests.optimizing import test_engine as planted
    from tests.paths import PLANTED

    monkeypatch.setitem(OPTIMIZERS._items, planted.SkipA.name, planted.SkipA())
    monkeypatch.setattr(engine, "shortfall", lambda *args: 11)  # no trial fits the budget left
    data = {
        "name": "t",
        "target": "latency",
        "rules": [{"name": "first", "try": ["test.skip_a"]}, {"name": "second", "try": ["test.skip_a"]}],
    }
    context = Context(machine=describe_machine(), workdir=tmp_path)
    result = engine.run_engine(accel.load(PLANTED / "opt_dead_work.py"), parse_recipe(data), context, budget_seconds=20)
    first, second = [s for s in result.steps if s.optimizer == "test.skip_a"]
    assert first.verdict.value == "skipped" and "needs ~11 s more budget" in first.reason, first.reason
    assert second.reason == "already skipped for want of budget (rule 'first')", second.reason
    assert "tried" not in second.reason


def test_a_budget_skip_counts_the_seconds_kept_for_the_final_re_measure(tmp_path, monkeypatch):
    """Seen on BERT: "needs ~25 s more budget: ... 64 s were left" while the status said 2m38s left:
    the rest was kept to re-measure the final pipeline, which the reason now says."""
    import accel
    from accel.core.machine import describe_machine
    from accel.optimizing.optimizers import OPTIMIZERS, Context
    from accel.optimizing.recipes.schema import parse_recipe
    from accel.optimizing.search import engine
    from tests.optimizing import test_engine as planted
    from tests.paths import PLANTED

    monkeypatch.setitem(OPTIMIZERS._items, planted.SkipA.name, planted.SkipA())
    monkeypatch.setattr(engine, "shortfall", lambda *args: 25)
    monkeypatch.setattr(engine.Search, "reserve", lambda self: 94.0)
    data = {"name": "t", "target": "latency", "rules": [{"name": "first", "try": ["test.skip_a"]}]}
    context = Context(machine=describe_machine(), workdir=tmp_path)
    result = engine.run_engine(accel.load(PLANTED / "opt_dead_work.py"), parse_recipe(data), context, budget_seconds=20)
    (step,) = [s for s in result.steps if s.optimizer == "test.skip_a"]
    assert "s were left for trials (94 s more kept to re-measure the final pipeline)" in step.reason, step.reason
