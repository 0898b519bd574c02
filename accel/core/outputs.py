"""A model's output as leaves (tensors, arrays, numbers found by walking its structure), and the
check that it holds a number at all.

The fidelity guard (accel.optimizing.search.fidelity) compares outputs leaf by leaf; profile and
optimize both refuse a model whose output holds no finite number (None, a string, only NaN), with
one message: there is nothing to check an optimization against, and it is the pipeline's bug.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from accel.core.errors import PipelineError


@dataclasses.dataclass(frozen=True)
class Leaf:
    kind: str  # "exact" (integer/bool), "float", or "other:<type>"
    shape: tuple[int, ...]
    value: Any  # np.ndarray for numbers, the object itself otherwise


def leaves(value: Any, path: str = "output") -> dict[str, Leaf]:
    """Every leaf of an output by its path, walking tuples, lists, mappings and dataclasses."""
    found: dict[str, Leaf] = {}
    _walk(value, path, found)
    return found


def without_numbers(output: Any) -> str | None:
    """What a model's output is when the guard has nothing to compare in it ("None", "a string",
    "only NaN/inf values", "an empty tensor"), or None when it holds a finite number or something
    else that compares exactly (a list of generated strings, say)."""
    if output is None:
        return "None"
    if isinstance(output, (str, bytes)):
        return f"a string ({str(output)[:40]!r})"
    found = leaves(output)
    numbers = [leaf for leaf in found.values() if leaf.kind in ("exact", "float")]
    if not numbers or len(numbers) < len(found):
        return None if found else "an empty structure"
    if any(leaf.kind == "exact" or np.isfinite(leaf.value).any() for leaf in numbers):
        return None
    return "only NaN/inf values" if any(leaf.value.size for leaf in numbers) else "an empty tensor"


def _walk(value: Any, path: str, found: dict[str, Leaf]) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype in (torch.bfloat16, torch.float16):
            tensor = tensor.float()
        _number(tensor.numpy(), path, found)
    elif isinstance(value, (np.ndarray, np.generic)):
        _number(np.asarray(value), path, found)
    elif isinstance(value, (bool, int, float)):
        _number(np.asarray(value), path, found)
    elif isinstance(value, Mapping):
        for key in sorted(value, key=str):
            _walk(value[key], f"{path}.{key}", found)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _walk(item, f"{path}[{i}]", found)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            _walk(getattr(value, field.name), f"{path}.{field.name}", found)
    else:
        found[path] = Leaf(f"other:{type(value).__name__}", (), value)


def _number(array: np.ndarray, path: str, found: dict[str, Leaf]) -> None:
    if array.dtype.kind in "biu":
        found[path] = Leaf("exact", tuple(array.shape), array.astype(np.int64))
    elif array.dtype.kind in "fc":
        found[path] = Leaf("float", tuple(array.shape), np.abs(array) if array.dtype.kind == "c" else array)
    else:
        found[path] = Leaf(f"other:{array.dtype}", tuple(array.shape), array)


def refuse_output_without_numbers(output: Any) -> None:
    """A model whose output holds no finite number (None, a string, NaN) leaves the guard nothing to
    compare: every candidate would match it. That is the pipeline's bug, said before any work."""
    what = without_numbers(output)
    if what is not None:
        raise PipelineError(
            f"the model returned {what}: the guard has no number to compare a candidate's output with",
            "return the model's output tensors; a forward without a return statement returns None",
        )
