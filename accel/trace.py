"""A torch.profiler trace of a few batches, written where TensorBoard and Perfetto can read it."""
from __future__ import annotations

from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, tensorboard_trace_handler

from accel.pipeline import Pipeline

TRACED_BATCHES = 3


def trace_pipeline(pipeline: Pipeline, trace_dir: Path) -> Path:
    """Trace a few batches as the pipeline runs them; returns the logdir."""
    trace_dir.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with torch.inference_mode(), profile(activities=activities, record_shapes=True, profile_memory=True,
                                         on_trace_ready=tensorboard_trace_handler(str(trace_dir))) as prof:
        for batch in pipeline.iter_batches(limit_batches=TRACED_BATCHES):
            pipeline.forward(batch)
            prof.step()
    return trace_dir
