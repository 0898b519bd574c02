"""FLOP and byte counts of one model call, cached by what they depend on.

Counting runs the call once under a Python dispatch mode (accel.core.counts), which on a
BERT-base-sized model costs about two plain calls. The counts depend on the model's code and
structure, its parameters' shapes and dtypes and the call's input shapes, never on weight values:
that is the key (`counts_key`), and the counts are kept as JSON in accel's cache folder
(accel.core.io.cache_root), so a second profile of the same model and inputs does not count again.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, Callable

import torch

from accel._version import __version__
from accel.core.counts import Counts, OpCount, count_forward
from accel.core.hashing import short_digest
from accel.core.io import cache_root, write_json_atomic
from accel.core.pipeline import tensors_in

COUNTS_SCHEMA = "accel.counts/2"  # 2: lookups count the rows they gather, not their table


def _class_source(cls: type) -> str:
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):
        return f"{cls.__module__}.{cls.__qualname__}"


def counts_key(model: torch.nn.Module, args: tuple, kwargs: dict) -> str:
    """A digest of what the counts depend on: every module class's code, the module tree, the
    parameters' and buffers' names, shapes and dtypes, the inputs' shapes and dtypes, and the
    torch and accel versions."""
    classes = sorted({type(m) for m in model.modules()}, key=lambda c: f"{c.__module__}.{c.__qualname__}")
    tensors = [f"{name}:{tuple(t.shape)}:{t.dtype}" for name, t in [*model.named_parameters(), *model.named_buffers()]]
    inputs = [f"{tuple(t.shape)}:{t.dtype}:{t.device}" for t in tensors_in((args, kwargs))]
    scalars = [repr(v) for v in (*args, *kwargs.values()) if isinstance(v, (int, float, bool, str, type(None)))]
    text = "\n".join(
        [
            torch.__version__,
            __version__,
            repr(model),
            *(short_digest(_class_source(c)) for c in classes),
            *tensors,
            "inputs",
            *inputs,
            *sorted(kwargs),
            *scalars,
        ]
    )
    return short_digest(text, 32)


def counts_path(key: str) -> Path:
    return cache_root() / "counts" / f"{key}.json"


def load_counts(key: str) -> Counts | None:
    try:
        data = json.loads(counts_path(key).read_text())
        if data.get("schema") != COUNTS_SCHEMA:
            return None
        return Counts(tuple(OpCount(**op) for op in data["ops"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def save_counts(key: str, counts: Counts) -> None:
    ops = [
        {
            "op": o.op,
            "module": o.module,
            "flops": o.flops,
            "bytes_read": o.bytes_read,
            "bytes_written": o.bytes_written,
            "weight_bytes": o.weight_bytes,
            "dtype": o.dtype,
        }
        for o in counts.ops
    ]
    try:
        counts_path(key).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(counts_path(key), {"schema": COUNTS_SCHEMA, "ops": ops})
    except OSError:
        pass  # a read-only cache folder only costs the next profile a count


def cached_counts(call: Callable[[], Any], model: Any, args: tuple, kwargs: dict) -> tuple[Counts, bool]:
    """The counts of `call` (one model call with `args` and `kwargs`), and whether they came from
    the cache; counted now (one call under the dispatch mode) and cached when not."""
    module = model if isinstance(model, torch.nn.Module) else None
    key = counts_key(module, args, kwargs) if module is not None else None
    if key is not None:
        found = load_counts(key)
        if found is not None:
            return found, True
    counts = count_forward(call, module)
    if key is not None:
        save_counts(key, counts)
    return counts, False
