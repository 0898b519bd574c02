"""Helpers shared by the optimizers that replace the model: how the model is called, which input
dimensions vary from batch to batch, the structure of its output, and stable names for artifacts.

A replaced model must be a drop-in: called the way the original is called (positional or keyword
arguments, optional ones left at their defaults) and returning the same structure (a transformers
`ModelOutput`, a dict, a tuple or a tensor) with the same keys. `output_structure` records that
structure as JSON (it goes in the lock), `flatten_output` lists its tensors in the order
torch.export flattens them, and `rebuild_output` puts tensors back into it.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import json
import sys
from collections.abc import Mapping
from typing import Any, Callable

import torch

from accel.core.hashing import text_sha256
from accel.core.pipeline import Pipeline, split_call

# Batches looked at to find the input dimensions that vary (batch size, padded length).
SHAPE_PROBE_BATCHES = 8


def tensors_only(batch: Any) -> str | None:
    """None when every model input is a tensor, else why not."""
    args, kwargs = split_call(batch)
    for value in (*args, *kwargs.values()):
        if not isinstance(value, torch.Tensor):
            return f"the model takes a {type(value).__name__}, not only tensors"
    return None


def positional_parameters(model: Any) -> list[str]:
    """The names of the parameters `model` takes positionally, in order ([] when unknown)."""
    try:
        signature = inspect.signature(model.forward if isinstance(model, torch.nn.Module) else model)
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in signature.parameters.values() if p.kind in kinds]


def varying_dims(pipeline: Pipeline) -> list[set[int]]:
    """Per flat input (positional, then keyword), the dimensions that may change between calls.

    The batch dimension always may (the last batch of a source, a locked model called with more
    rows than it was optimized on), and integer inputs (token ids, masks) may change in every
    dimension (padded length); with a source, any other dimension that differs among the first
    batches is also marked."""
    example = pipeline.example_batch()
    args, kwargs = split_call(example)
    flat = [*args, *kwargs.values()]
    dims: list[set[int]] = [set() for _ in flat]
    for i, tensor in enumerate(flat):
        if tensor.dim() > 0:
            dims[i].add(0)
        if not tensor.is_floating_point():
            dims[i].update(range(tensor.dim()))
    if not pipeline.has_source:
        return dims
    for batch in pipeline.iter_batches(limit_batches=SHAPE_PROBE_BATCHES, num_workers=0):
        b_args, b_kwargs = split_call(batch)
        for i, tensor in enumerate([*b_args, *b_kwargs.values()]):
            if i < len(flat) and isinstance(tensor, torch.Tensor) and tensor.dim() == flat[i].dim():
                dims[i].update(d for d in range(tensor.dim()) if tensor.shape[d] != flat[i].shape[d])
    return dims


def artifact_name(prefix: str, pipeline: Pipeline, config: Any) -> str:
    """A file name that is the same for the same pipeline name and parameters."""
    digest = text_sha256(json.dumps([pipeline.name, repr(config)], sort_keys=True))[:10]
    return f"{pipeline.name}-{prefix}-{digest}"


def with_forward(model: torch.nn.Module, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]) -> torch.nn.Module:
    """A shallow copy of `model` (its class, parameters and hooks) whose forward is `wrap(forward)`.

    The copy keeps every method of the model, so a transformers model's generate() still runs its
    loop, now through the wrapped forward; a wrapper module would hide generate() (and everything
    else the pipeline calls on the model). The wrapped callable keeps the forward's signature
    (`__wrapped__`), so what reads it (keyword names, use_cache) still sees the model's own.
    """
    copied = copy.copy(model)
    forward = copied.__dict__.get("forward") or type(copied).forward.__get__(copied)
    wrapped = wrap(forward)
    if not hasattr(wrapped, "__wrapped__"):
        try:
            # updated=(): the wrapper's own attributes (the forward it calls) stay its own
            functools.update_wrapper(wrapped, forward, updated=())
        except AttributeError:  # a callable that takes no attributes: its own signature stands
            pass
    object.__setattr__(copied, "forward", wrapped)
    return copied


def map_tensors(output: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """`fn` applied to every tensor in an output, the containers kept as they are: a ModelOutput
    stays that ModelOutput class, a namedtuple that namedtuple."""
    if isinstance(output, torch.Tensor):
        return fn(output)
    if isinstance(output, Mapping):
        return _construct(type(output), {k: map_tensors(v, fn) for k, v in output.items()})
    if isinstance(output, tuple):
        items = [map_tensors(v, fn) for v in output]
        return type(output)(*items) if hasattr(output, "_fields") else type(output)(items)
    if isinstance(output, list):
        return [map_tensors(v, fn) for v in output]
    return output


def _construct(cls: type, values: dict) -> Any:
    """A mapping of class `cls` holding `values` (a plain dict when the class will not take them)."""
    if cls is dict:
        return values
    try:
        return cls(**values)
    except TypeError:
        return values


def floating_outputs_to(output: Any, dtype: torch.dtype) -> Any:
    """Cast floating tensors in an output (tensor, tuple, list, dict, ModelOutput) to `dtype`."""
    return map_tensors(output, lambda t: t.to(dtype) if t.is_floating_point() and t.dtype != dtype else t)


def output_structure(output: Any) -> dict[str, Any]:
    """The structure of a model output as JSON: tensors, None, tuples, lists, mappings by class."""
    if isinstance(output, torch.Tensor):
        return {"kind": "tensor"}
    if output is None:
        return {"kind": "none"}
    if isinstance(output, Mapping):
        cls = type(output)
        return {
            "kind": "mapping",
            "class": None if cls is dict else f"{cls.__module__}:{cls.__qualname__}",
            "keys": [str(k) for k in output],
            "items": [output_structure(v) for v in output.values()],
        }
    if isinstance(output, (tuple, list)):
        return {
            "kind": "tuple" if isinstance(output, tuple) else "list",
            "items": [output_structure(v) for v in output],
        }
    raise TypeError(f"the model returns a {type(output).__name__}; only tensors and containers of them can be exported")


def flatten_output(output: Any) -> list[torch.Tensor]:
    """The output's tensors in structure order (dict insertion order, as torch.export flattens)."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, Mapping):
        return [t for v in output.values() for t in flatten_output(v)]
    if isinstance(output, (tuple, list)):
        return [t for v in output for t in flatten_output(v)]
    return []


def tensor_count(structure: dict[str, Any]) -> int:
    if structure["kind"] == "tensor":
        return 1
    return sum(tensor_count(item) for item in structure.get("items", []))


def rebuild_output(structure: dict[str, Any], tensors: list[torch.Tensor]) -> Any:
    """The output of `structure` with `tensors` (in flatten order) in it."""
    remaining = iter(tensors)

    def build(node: dict[str, Any]) -> Any:
        kind = node["kind"]
        if kind == "tensor":
            return next(remaining)
        if kind == "none":
            return None
        items = [build(item) for item in node["items"]]
        if kind == "tuple":
            return tuple(items)
        if kind == "list":
            return items
        values = dict(zip(node["keys"], items))
        cls = _mapping_class(node.get("class"))
        return values if cls is None else _construct(cls, values)

    return build(structure)


def _mapping_class(name: str | None) -> type | None:
    """The class a structure names, from the modules already imported (the user's model imported
    it); None (a plain dict) when it cannot be found."""
    if not name:
        return None
    module_name, _, qualname = name.partition(":")
    module = sys.modules.get(module_name)
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return None
    found: Any = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
        if found is None:
            return None
    return found if isinstance(found, type) else None
