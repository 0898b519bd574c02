"""A model's generate() with the KV cache on: one mechanism for the profile and the optimizer.

transformers' generate() takes `use_cache`; code written with `use_cache=False` (or a model whose
config turned it off) recomputes the whole prefix at every step. `with_cache(model)` returns a
shallow copy of the model (the same parameters, buffers and hooks, no second copy of the weights)
whose `generate` gets `use_cache=True` whatever the call says, so a pipeline's own generate
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


class CachedGenerate:
    """`model.generate` with use_cache=True; counts its calls, so a caller can tell whether the
    pipeline's generate went through it at all (a hand-written loop calling the model does not)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        kwargs["use_cache"] = True
        return type(self.model).generate(self.model, *args, **kwargs)


def with_cache(model: torch.nn.Module) -> torch.nn.Module:
    """A shallow copy of `model` whose generate() runs with the KV cache on."""
    cached = copy.copy(model)
    # nn.Module's __setattr__ would take a callable object for a plain attribute anyway; set it on
    # the instance so it shadows the class's generate for this copy only.
    object.__setattr__(cached, "generate", CachedGenerate(cached))
    return cached


def cached_generate(model: Any) -> CachedGenerate | None:
    """The forced generate of a model made by `with_cache`, None for any other model."""
    found = getattr(model, "__dict__", {}).get("generate")
    return found if isinstance(found, CachedGenerate) else None
