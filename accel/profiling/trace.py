"""A torch.profiler trace of a few batches, written where TensorBoard and Perfetto can read it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch.profiler import ProfilerAction, ProfilerActivity, profile, tensorboard_trace_handler

from accel.core.pipeline import Pipeline

TRACED_BATCHES = 3


def record_steps(count: int) -> Callable[[int], ProfilerAction]:
    """A profiler schedule that records the first `count` steps (saving after the last) and then
    stops; unlike no schedule at all, it marks each step (ProfilerStep#N) in the trace."""

    def schedule(step: int) -> ProfilerAction:
        if step < count - 1:
            return ProfilerAction.RECORD
        return ProfilerAction.RECORD_AND_SAVE if step == count - 1 else ProfilerAction.NONE

    return schedule


def trace_pipeline(pipeline: Pipeline, trace_dir: Path, batches: int = TRACED_BATCHES) -> Path:
    """Trace `batches` batches (at least one) as the pipeline runs them; returns the logdir."""
    batches = max(batches, 1)
    trace_dir.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with (
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
    return trace_dir
