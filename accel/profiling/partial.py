"""A profile stopped by Ctrl-C or SIGTERM once its stages were measured: the measured data marked
partial (the JSON's "partial": true and a note naming the pass stopped), the interrupt that carries
what the passes measured out of them (PassesInterrupted: the pipeline's hardware passes, an ONNX
model's node profiling), and the one that carries the report of it out of `profile_pipeline` and
`profile_onnx_file` (ProfileInterrupted)."""

from __future__ import annotations

import dataclasses

from accel.core.budget import Deadline
from accel.profiling.data import ProfileData
from accel.profiling.report import Report


class PassesInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during the `pass_name` pass: `data` holds the passes done before it."""

    def __init__(self, data: ProfileData, pass_name: str) -> None:
        super().__init__(pass_name)
        self.data, self.pass_name = data, pass_name


class ProfileInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during the `pass_name` pass, after the stages were measured: `report` holds
    what was measured, marked partial. `accel.profile` returns it; a caller of profile_pipeline that
    needs a whole profile (the optimize diagnosis) sees an interrupt, as a KeyboardInterrupt."""

    def __init__(self, report: Report, pass_name: str) -> None:
        super().__init__(pass_name)
        self.report, self.pass_name = report, pass_name


def marked_partial(data: ProfileData, stopped: str, deadline: Deadline | None = None) -> ProfileData:
    """`data` marked partial: stopped during the `stopped` pass, with the budget spent so far (a
    profile measured under a Deadline)."""
    note = f"interrupted during the {stopped} pass: the stages and the passes before it were measured, the rest not run"
    extra = {
        **data.extra,
        "partial": True,
        "interrupted_pass": stopped,
        **({"budget": deadline.to_dict()} if deadline is not None else {}),
        "notes": [*data.extra.get("notes", []), note],
    }
    return dataclasses.replace(data, extra=extra)
