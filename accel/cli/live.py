"""Live progress for long commands, on stderr: a Rich status line on a terminal (phase, k of n,
elapsed, budget left) with each decided row printed above it; one plain line per event when stderr
is not a terminal (a CI log): no spinner, no control codes.

On a terminal the status line is one line (cut with an ellipsis, never wrapped: a wrapped status
line redraws two lines on every spinner frame), its clocks run between events (a phase that lasts a
minute does not show the elapsed time and the budget left of its start), and a decided row also
moves it on (it never says "checking that it applies" of a candidate already shown as decided).

A `LiveProgress` is both a plain `Progress` (a line of text) and an `EventSink` (a typed
accel.core.progress.ProgressEvent), so the library sends it whichever it has."""

from __future__ import annotations

import os
import re
from typing import Callable

from rich.console import Console, RenderableType
from rich.status import Status
from rich.text import Text

from accel.core.measure import now
from accel.core.progress import ProgressEvent

RowRenderer = Callable[[dict, int | None, int | None], RenderableType]
# What a plain progress line starts with ("[3s, 57s left] "), for whoever reads a log back.
PROGRESS_LINE = re.compile(r"\[\d+(m\d\d)?s(, \d+(m\d\d)?s left)?\] ")


def clock(seconds: float) -> str:
    """Seconds as a short wall-clock reading: 42s, 3m05s."""
    whole = round(max(seconds, 0.0))
    return f"{whole // 60}m{whole % 60:02d}s" if whole >= 60 else f"{whole}s"


class LiveProgress:
    """Progress for one command: use as a context manager around the library call. `budget_seconds`
    starts the budget clock at once; an event carrying `budget_left_seconds` resets it. `render_row`
    turns an event's decided row into what is printed; `unit` names what k of n counts."""

    def __init__(
        self,
        out: Console,
        title: str,
        *,
        budget_seconds: float | None = None,
        render_row: RowRenderer | None = None,
        unit: str = "",
    ) -> None:
        self.out, self.title, self.render_row = out, title, render_row
        self.unit = unit + " " if unit else ""  # what k of n counts: "candidate 2/5"
        self.started = now()
        self.deadline = self.started + budget_seconds if budget_seconds is not None else None
        self.live = out.is_terminal and not out.is_dumb_terminal
        self.status: Status | None = None
        self.rows: list[dict] = []  # the rows decided so far, in order
        self.phase = title  # what the command was doing at the last event

    def __enter__(self) -> LiveProgress:
        if self.live:
            self.status = self.out.status(StatusLine(self, None))
            self.status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.stop()

    def __call__(self, message: str) -> None:
        self.event(ProgressEvent(message))

    def event(self, event: ProgressEvent) -> None:
        self.phase = event.phase
        if event.budget_left_seconds is not None:
            self.deadline = now() + event.budget_left_seconds
        if event.row is not None:
            self.rows.append(event.row)
            if self.render_row is not None:
                self.out.print(self.render_row(event.row, event.index, event.total))
                if self.status is None:
                    return
        if self.status is not None:
            self.status.update(StatusLine(self, event))
        else:
            self.out.print(Text(self.line(event)), soft_wrap=True)

    def line(self, event: ProgressEvent, *, since: float | None = None) -> str:
        """The event in one line: [elapsed, budget left] title: k/n phase. `since`: when the event
        came, for a line shown live (its elapsed time runs on from the event's)."""
        elapsed = event.elapsed_seconds if event.elapsed_seconds is not None else now() - self.started
        if since is not None and event.elapsed_seconds is not None:
            elapsed += now() - since
        clocks = clock(elapsed)
        if self.deadline is not None:
            clocks += f", {clock(self.deadline - now())} left"
        count = (
            f"{self.unit}{event.index}/{event.total}: " if event.index is not None and event.total is not None else ""
        )
        return f"[{clocks}] {self.title}: {count}{event.phase}"


class StatusLine:
    """The live status line: rendered again on every refresh, so its clocks run; one line, cut with
    an ellipsis at the terminal's width. Before the first event: the title alone (no clock: the
    library's clock may start later, after loading, and a clock must not run backwards)."""

    def __init__(self, progress: LiveProgress, event: ProgressEvent | None) -> None:
        self.progress, self.event, self.since = progress, event, now()

    def __rich__(self) -> Text:
        text = self.progress.title if self.event is None else self.progress.line(self.event, since=self.since)
        return Text(text, no_wrap=True, overflow="ellipsis")


def shares_terminal(first: Console, second: Console) -> bool:
    """Whether two consoles print to the same terminal (stdout and stderr both on it): what one
    showed live the other need not print again. Piped or redirected, they never do."""
    if not (first.is_terminal and second.is_terminal):
        return False
    try:
        one, other = os.fstat(first.file.fileno()), os.fstat(second.file.fileno())
    except (AttributeError, OSError, ValueError):  # a file-like object with no descriptor
        return False
    return (one.st_dev, one.st_ino, one.st_rdev) == (other.st_dev, other.st_ino, other.st_rdev)
