"""What a search tells its Progress while it works: candidate k of n as it starts, each step's row
as soon as it is decided (accel.core.progress events), and how many candidates were decided."""

from __future__ import annotations

from accel.core.progress import Progress, ProgressEvent, emit
from accel.optimizing.steps import Step


class Narrator:
    """The search's progress: `plan` the count and rows decided up front, `start` each candidate,
    `row` each decided step; `decided` counts the candidates with a row."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.planned = self.index = self.decided = 0

    def plan(self, total: int, steps: list[Step]) -> None:
        self.planned = total
        for step in steps:
            self.row(step)

    def start(self, optimizer: str) -> None:
        self.index = min(self.index + 1, max(self.planned, 1))
        self.say(f"{optimizer}: checking that it applies")

    def row(self, step: Step) -> None:
        self.decided = max(self.decided, self.index)  # the candidate under way has its row
        self.say(f"{step.optimizer}: {step.verdict.value}", row=step)

    def say(self, phase: str, row: Step | None = None) -> None:
        index = self.index or None
        total = self.planned if index else None
        emit(self.progress, ProgressEvent(phase, index, total, row=row.to_dict() if row else None))
