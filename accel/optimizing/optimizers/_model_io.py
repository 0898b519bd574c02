"""Helpers shared by the optimizers that replace the model: how the model is called, which input
dimensions vary from batch to batch, and stable names for artifacts."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch

from accel.core.pipeline import Pipeline

# Batches looked at to find the input dimensions that vary (batch size, padded length).
SHAPE_PROBE_BATCHES = 8


def split_call(batch: Any) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
    """A batch as (args, kwargs), the way Pipeline.call_model unpacks it."""
    if isinstance(batch, tuple):
        return batch, {}
    if isinstance(batch, Mapping):
        return (), dict(batch)
    return (batch,), {}


def tensors_only(batch: Any) -> str | None:
    """None when every model input is a tensor, else why not."""
    args, kwargs = split_call(batch)
    for value in (*args, *kwargs.values()):
        if not isinstance(value, torch.Tensor):
            return f"the model takes a {type(value).__name__}, not only tensors"
    return None


def varying_dims(pipeline: Pipeline) -> list[set[int]]:
    """Per flat input, the dimensions that may change between calls.

    With a source, the batch dimension always may (the last batch, batch-size changes) and integer
    inputs (token ids) may change in every dimension (padded length); any other dimension that
    differs among the first batches is also marked."""
    example = pipeline.example_batch()
    args, kwargs = split_call(example)
    flat = [*args, *kwargs.values()]
    dims: list[set[int]] = [set() for _ in flat]
    if not pipeline.has_source:
        return dims
    for i, tensor in enumerate(flat):
        if tensor.dim() > 0:
            dims[i].add(0)
        if not tensor.is_floating_point():
            dims[i].update(range(tensor.dim()))
    for batch in pipeline.iter_batches(limit_batches=SHAPE_PROBE_BATCHES, num_workers=0):
        b_args, b_kwargs = split_call(batch)
        for i, tensor in enumerate([*b_args, *b_kwargs.values()]):
            if i < len(flat) and isinstance(tensor, torch.Tensor) and tensor.dim() == flat[i].dim():
                dims[i].update(d for d in range(tensor.dim()) if tensor.shape[d] != flat[i].shape[d])
    return dims


def artifact_name(prefix: str, pipeline: Pipeline, config: Any) -> str:
    """A file name that is the same for the same pipeline name and parameters."""
    digest = hashlib.sha256(json.dumps([pipeline.name, repr(config)], sort_keys=True).encode()).hexdigest()[:10]
    return f"{pipeline.name}-{prefix}-{digest}"


def floating_outputs_to(output: Any, dtype: torch.dtype) -> Any:
    """Cast floating tensors in an output (tensor, tuple, list, dict) to `dtype`."""
    if isinstance(output, torch.Tensor):
        return output.to(dtype) if output.is_floating_point() and output.dtype != dtype else output
    if isinstance(output, tuple):
        return tuple(floating_outputs_to(v, dtype) for v in output)
    if isinstance(output, list):
        return [floating_outputs_to(v, dtype) for v in output]
    if isinstance(output, Mapping):
        return {k: floating_outputs_to(v, dtype) for k, v in output.items()}
    return output
