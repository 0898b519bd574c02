"""A model's generate() with the KV cache on: one mechanism for the profile and the optimizer.

transformers' generate() takes `use_cache`; code written with `use_cache=False` (or a model whose
config turned it off) recomputes the whole prefix at every step. `with_cache(model)` returns a
shallow copy of the model (the same parameters, buffers and hooks, no second copy of the weights),
of a subclass of its class whose `generate` passes `use_cache=True` whatever the call says, so a pipeline's own generate
function, unchanged, runs the cached loop. The original model is left as it was.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch


def accepts_cache(model: Any) -> bool:
    """The model takes use_cache (or past_key_values) and is driven through its own generate()."""
    if not isinstance(model, torch.nn.Module) or not callable(getattr(model, "generate", None)):
        return False
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return bool({"use_cache", "past_key_values"} & set(parameters))


# One subclass per model class: the class the copy gets, so every copy of the copy (shallow or deep:
# the model-replacing optimizers copy the model) keeps generate() with the cache on, bound to itself.
_CACHED_CLASSES: dict[type, type] = {}
CALLS = "_accel_cached_generate_calls"


def _cached_class(cls: type) -> type:
    found = _CACHED_CLASSES.get(cls)
    if found is None:

        def generate(self: Any, *args: Any, **kwargs: Any) -> Any:
            # Counted, so a caller can tell whether the pipeline's generate went through here at
            # all (a hand-written loop that calls the model does not).
            self.__dict__[CALLS] = self.__dict__.get(CALLS, 0) + 1
            kwargs["use_cache"] = True
            return cls.generate(self, *args, **kwargs)  # type: ignore[attr-defined]  # accepts_cache checked it

        found = type(cls.__name__, (cls,), {"generate": generate, "__module__": cls.__module__, "__doc__": cls.__doc__})
        _CACHED_CLASSES[cls] = found
    return found


def with_cache(model: torch.nn.Module) -> torch.nn.Module:
    """A shallow copy of `model` whose generate() runs with the KV cache on."""
    cached = copy.copy(model)
    cached.__dict__.pop(CALLS, None)
    cached.__class__ = _cached_class(type(model))
    return cached


def is_cached(model: Any) -> bool:
    """The model was made by `with_cache` (or is a copy of one)."""
    return type(model) in _CACHED_CLASSES.values()


def generate_calls(model: Any) -> int:
    """How many times the cached generate() of a `with_cache` model has been called."""
    return int(getattr(model, "__dict__", {}).get(CALLS, 0))
