"""How a long library call says what it is doing: a `Progress` callable the CLI passes in (it
prints to stderr; the library never prints), and the silent default.

A plain `Progress` gets one line of text per event. A progress object that also has an
`event(ProgressEvent)` method (an `EventSink`, as the CLI's live display) gets the typed event
instead: the phase, candidate k of n, elapsed seconds, budget left and a decided row. The library
emits through `emit`, which picks the form the receiver takes; `stamped` fills in the elapsed
time and budget left of a whole command around a call that only knows its own part."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Protocol, runtime_checkable

from accel.core.measure import now

Progress = Callable[[str], None]


def no_progress(message: str) -> None:
    """The default Progress: says nothing."""
    return None


@dataclasses.dataclass(frozen=True)
class ProgressEvent:
    """One thing a long call did or started: `phase` in words; `index` of `total` (1-based) when it
    works through a list (candidates, replicates); `row`, a decided step as its JSON dict."""

    phase: str
    index: int | None = None
    total: int | None = None
    elapsed_seconds: float | None = None
    budget_left_seconds: float | None = None
    row: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.index is not None and self.total is not None and not 0 < self.index <= max(self.total, 1):
            raise ValueError(f"ProgressEvent index must be within 1..total, got {self.index} of {self.total}")

    def describe(self) -> str:
        """The event as one line of text, for a plain Progress."""
        count = f"{self.index}/{self.total} " if self.index is not None and self.total is not None else ""
        return count + self.phase


@runtime_checkable
class EventSink(Protocol):
    """A progress receiver that takes typed events."""

    def event(self, event: ProgressEvent) -> None: ...


def emit(progress: Progress | None, event: ProgressEvent) -> None:
    """Send `event` to `progress`: the event itself to an EventSink, its one-line text to a plain Progress."""
    if progress is None:
        return
    if isinstance(progress, EventSink):
        progress.event(event)
    else:
        progress(event.describe())


class Stamped:
    """A progress receiver that stamps each event with the elapsed seconds since `started` and the
    budget left of `budget_seconds` (a whole command's), then passes it on to `inner`."""

    def __init__(self, inner: Progress, started: float, budget_seconds: float | None) -> None:
        self.inner, self.started, self.budget_seconds = inner, started, budget_seconds

    def __call__(self, message: str) -> None:
        self.event(ProgressEvent(message))

    def event(self, event: ProgressEvent) -> None:
        elapsed = now() - self.started
        left = max(self.budget_seconds - elapsed, 0.0) if self.budget_seconds is not None else None
        emit(self.inner, dataclasses.replace(event, elapsed_seconds=elapsed, budget_left_seconds=left))


def stamped(progress: Progress, started: float, budget_seconds: float | None) -> Progress:
    """`progress` with elapsed time and budget left filled in on every event (see Stamped)."""
    return Stamped(progress, started, budget_seconds)
