"""A torch.profiler trace of a few batches, written where TensorBoard and Perfetto can read it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch.profiler import ProfilerAction, ProfilerActivity, profile, tensorboard_trace_handler

from accel.core.errors import AccelError
from accel.core.pipeline import Pipeline
from accel.core.profiler_notes import notes_dropped

TRACED_BATCHES = 3
# The files tensorboard_trace_handler writes, one per traced run.
TRACE_GLOB = "*.pt.trace.json*"
TRACE_HINT = "check the folder's free space and permissions, or pass --no-trace"


def record_steps(count: int) -> Callable[[int], ProfilerAction]:
    """A profiler schedule that records the first `count` steps (saving after the last) and then
    stops; unlike no schedule at all, it marks each step (ProfilerStep#N) in the trace."""

    def schedule(step: int) -> ProfilerAction:
        if step < count - 1:
            return ProfilerAction.RECORD
        return ProfilerAction.RECORD_AND_SAVE if step == count - 1 else ProfilerAction.NONE

    return schedule


def trace_pipeline(pipeline: Pipeline, trace_dir: Path, batches: int = TRACED_BATCHES) -> Path:
    """Trace `batches` batches (at least one) as the pipeline runs them; returns the logdir.

    torch.profiler's start and stop notes are kept out of the terminal (the profiler starts and stops
    at the schedule's steps, so the whole block is caught); a trace that was not written (a full disk,
    a folder turned read-only) is an AccelError, never a logdir that holds nothing."""
    batches = max(batches, 1)
    try:
        trace_dir.mkdir(parents=True, exist_ok=True)
        before = set(trace_dir.glob(TRACE_GLOB))
        _trace(pipeline, trace_dir, batches)
    except OSError as exc:
        raise AccelError(f"--trace-dir {trace_dir}: the trace could not be written: {exc}", TRACE_HINT) from exc
    written = [path for path in set(trace_dir.glob(TRACE_GLOB)) - before if path.stat().st_size > 0]
    if not written:
        raise AccelError(f"--trace-dir {trace_dir}: torch.profiler wrote no trace there", TRACE_HINT)
    return trace_dir


def _trace(pipeline: Pipeline, trace_dir: Path, batches: int) -> None:
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with (
        notes_dropped(),
        torch.inference_mode(),
        profile(
            activities=activities,
            record_shapes=True,
            profile_memory=True,
            schedule=record_steps(batches + 1),
            on_trace_ready=tensorboard_trace_handler(str(trace_dir)),
        ) as prof,
    ):
        for batch in pipeline.iter_batches(limit_batches=batches):
            pipeline.forward(batch)
            prof.step()
