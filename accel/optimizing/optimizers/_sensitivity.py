"""Which Linear layers int8 hurts most, measured: the last rung of quantize.int8_dynamic's ladder
leaves them in float.

Each Linear's input is captured on the pipeline's example batch (a forward hook, the first call of
each module); the layer is run on it in float and as the int8 kernel would run it (the quantized
copy's module of the same name), and its error is the relative norm of the difference. The layers
with the largest errors are the ones a whole-model guard failure comes from far more often than
not (an attention output projection, the pooler, the last classifier), so leaving the worst share
of them in float keeps most of the int8 speed and passes the guard where per-channel scales alone
did not. Measured on the model itself, never on a list of layer names.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from accel.core.pipeline import Pipeline


def linear_inputs(model: torch.nn.Module, pipeline: Pipeline) -> dict[str, torch.Tensor]:
    """Each Linear's input on the example batch (its first call), by module name."""
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):

            def hook(_: Any, args: tuple, name: str = name) -> None:
                if name not in captured and args and isinstance(args[0], torch.Tensor):
                    captured[name] = args[0].detach()

            handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            pipeline.replace(model=model).call_model(pipeline.example_batch())
    finally:
        for handle in handles:
            handle.remove()
    return captured


def layer_errors(model: torch.nn.Module, quantized: torch.nn.Module, pipeline: Pipeline) -> dict[str, float]:
    """Per Linear of `model`, the relative error of its int8 counterpart in `quantized` on its input."""
    modules = dict(quantized.named_modules())
    errors: dict[str, float] = {}
    with torch.no_grad():
        for name, x in linear_inputs(model, pipeline).items():
            counterpart = modules.get(name)
            if counterpart is None:
                continue
            exact = model.get_submodule(name)(x)
            norm = float(torch.linalg.vector_norm(exact))
            errors[name] = float(torch.linalg.vector_norm(counterpart(x) - exact)) / max(norm, 1e-12)
    return errors


def worst_layers(errors: dict[str, float], share: float) -> list[str]:
    """The `share` of the layers (at least one) with the largest errors, worst first."""
    if share <= 0 or not errors:
        return []
    count = max(1, math.ceil(share * len(errors)))
    return sorted(errors, key=lambda name: -errors[name])[:count]
