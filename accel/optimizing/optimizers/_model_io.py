"""Helpers shared by the optimizers that replace the model: how the model is called, which input
dimensions vary from batch to batch, the structure of its output, and stable names for artifacts.

A replaced model must be a drop-in: called the way the original is called (positional or keyword
arguments, optional ones left at their defaults) and returning the same structure (a transformers
`ModelOutput`, a dict, a tuple or a tensor) with the same keys. `output_structure` records that
structure as JSON (it goes in the lock), `flatten_output` lists its tensors in the order
torch.export flattens them, and `rebuild_output` puts tensors back into it.

A lock is data that travels, so the class a structure names is never imported on its say-so: it is
looked up only in packages the process has already imported (transformers' ModelOutput classes,
collections' OrderedDict, torch), or in the pipeline file's own module while it is loaded;
`check_output_structure` refuses a lock naming any other (accel.optimizing.lock_files checks the files
a lock names).
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

from accel.core.errors import LockError
from accel.core.hashing import text_sha256
from accel.core.pipeline import Pipeline, split_call

# Batches looked at to find the input dimensions that vary (batch size, padded length).
SHAPE_PROBE_BATCHES = 8
# Packages whose mapping classes a structure may name (ModelOutput subclasses, OrderedDict), found
# only once the process has imported the package: naming one never imports a module from sys.path.
OUTPUT_CLASS_PACKAGES = ("transformers", "torch", "collections")
# accel.core.loading imports a pipeline file as a module named so: its classes are the user's own
# (the file whose sha256 the lock checks), found while that module is loaded, else a plain dict.
PIPELINE_MODULE_PREFIX = "accel_user_"
# Deeper than any model's output; a crafted structure nested deeper is refused, not recursed into.
MAX_STRUCTURE_DEPTH = 64
STRUCTURE_KINDS = ("tensor", "none", "tuple", "list", "mapping")
REWRITE_HINT = "run accel optimize again to write a fresh lock"


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
            "class": output_class_name(cls),
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


def output_class_name(cls: type) -> str | None:
    """How a structure records a mapping's class: None (a plain dict) for dict, and for a class a
    lock could not name back (see _mapping_class), so a lock never records one it would refuse."""
    if cls is dict:
        return None
    name = f"{cls.__module__}:{cls.__qualname__}"
    try:
        return name if _mapping_class(name) is cls else None
    except LockError:
        return None


def check_output_structure(structure: Any, field: str = "output_structure", depth: int = 0) -> None:
    """Refuse (LockError naming the field) a structure from a lock that is not one output_structure
    writes, or that names a class accel does not rebuild outputs with."""
    if depth > MAX_STRUCTURE_DEPTH:
        raise LockError(f"the lock's {field} is nested deeper than {MAX_STRUCTURE_DEPTH} levels", REWRITE_HINT)
    kind = structure.get("kind") if isinstance(structure, dict) else None
    if kind not in STRUCTURE_KINDS:
        raise LockError(f"the lock's {field} is not an output structure (kind {kind!r})", REWRITE_HINT)
    if kind in ("tensor", "none"):
        return
    items = structure.get("items")
    if not isinstance(items, list):
        raise LockError(f"the lock's {field}.items is not a list", REWRITE_HINT)
    if kind == "mapping":
        keys = structure.get("keys")
        if not isinstance(keys, list) or len(keys) != len(items) or not all(isinstance(k, str) for k in keys):
            raise LockError(f"the lock's {field}.keys is not one name per item", REWRITE_HINT)
        _mapping_class(structure.get("class"), f"{field}.class")
    for i, item in enumerate(items):
        check_output_structure(item, f"{field}.items[{i}]", depth + 1)


def _mapping_class(name: Any, field: str = "output_structure.class") -> type | None:
    """The mapping class a structure names; None (a plain dict) for none, or for a class of a
    pipeline module no longer loaded. A class outside OUTPUT_CLASS_PACKAGES, or in one of them not
    imported yet, is a LockError: a lock never makes accel import a module."""
    if name is None:
        return None
    if not isinstance(name, str) or ":" not in name:
        raise LockError(f"the lock's {field} is {name!r}, not 'module:Class'", REWRITE_HINT)
    module_name, _, qualname = name.partition(":")
    package = module_name.split(".")[0]
    if module_name.startswith(PIPELINE_MODULE_PREFIX):
        module = sys.modules.get(module_name)
        if module is None:  # the pipeline module of the process that wrote the lock
            return None
        found = _attribute(module, qualname)
        return found if isinstance(found, type) and issubclass(found, Mapping) else None
    if package not in OUTPUT_CLASS_PACKAGES or package not in sys.modules:
        raise LockError(
            f"the lock's {field} names the class {name!r}: accel rebuilds a model's output only with "
            f"classes of {', '.join(OUTPUT_CLASS_PACKAGES)} already imported, and never imports a module a lock names",
            REWRITE_HINT,
        )
    try:  # a submodule of a package already imported: found through the package, not sys.path
        found = _attribute(importlib.import_module(module_name), qualname)
    except ImportError:
        found = None
    if not (isinstance(found, type) and issubclass(found, Mapping)):
        raise LockError(f"the lock's {field} names {name!r}, which is not a mapping class here", REWRITE_HINT)
    return found


def _attribute(module: Any, qualname: str) -> Any:
    found: Any = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
        if found is None:
            return None
    return found


def has_attention(model: torch.nn.Module) -> bool:
    """Whether the model holds an attention layer (what NNCF's transformer scheme is for)."""
    return any(
        isinstance(m, torch.nn.MultiheadAttention) or "attention" in type(m).__name__.lower() for m in model.modules()
    )


class CalibrationReader:
    """ORT's CalibrationDataReader over the pipeline's own batches."""

    def __init__(self, pipeline: Pipeline, input_names: list[str], batches: int) -> None:
        self.feeds = []
        graph_batches = (
            pipeline.iter_batches(limit_batches=batches, num_workers=0)
            if pipeline.has_source
            else [pipeline.example_batch()]
        )
        for batch in graph_batches:
            args, kwargs = split_call(batch)
            values = [*args, *kwargs.values()]
            self.feeds.append({n: v.detach().cpu().numpy() for n, v in zip(input_names, values)})
        self._iter = iter(self.feeds)

    def get_next(self) -> dict | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self.feeds)
