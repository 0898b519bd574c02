"""`layout.channels_last`: a CNN's convolutions in the channels-last (NHWC) memory layout.

oneDNN (CPU) and cuDNN (tensor cores) run convolutions fastest on NHWC tensors; PyTorch keeps
NCHW by default, so each convolution reorders its input and output. With the weights and the 4-D
inputs in channels-last, the reorders go (PyTorch's CPU performance guide recommends it for CNNs).
It composes with a precision change: bf16 convolutions gain the most. The values do not change
(the same arithmetic on a different layout), which the guard checks like any other candidate.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch

from accel.core.measure import now
from accel.core.pipeline import Pipeline, tensors_in
from accel.optimizing.optimizers import Applied, Context, Optimizer, register
from accel.optimizing.optimizers._model_io import map_tensors, with_forward

CONVOLUTIONS = (torch.nn.Conv2d, torch.nn.ConvTranspose2d)


def _to_channels_last(tensor: torch.Tensor) -> torch.Tensor:
    if tensor.dim() == 4 and tensor.is_floating_point():
        return tensor.contiguous(memory_format=torch.channels_last)
    return tensor


class ChannelsLastForward:
    """The model's forward with its 4-D floating inputs handed over in channels-last."""

    def __init__(self, forward: Any) -> None:
        self.forward = forward

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*map_tensors(args, _to_channels_last), **map_tensors(kwargs, _to_channels_last))


def channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of the model (its own class) with channels-last weights and inputs."""
    copied = copy.deepcopy(model)
    copied.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # Module.to takes it; the stubs omit it
    return with_forward(copied, ChannelsLastForward)


@register
class ChannelsLast(Optimizer):
    name = "layout.channels_last"
    cures = ("compute_bound", "memory_bandwidth")
    description = "A CNN's weights and 4-D inputs in channels-last (NHWC): no layout reorders around each convolution."
    slot: ClassVar[str] = "layout"

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        model = pipeline.model
        if not isinstance(model, torch.nn.Module):
            return "the model is not a torch.nn.Module"
        if not any(isinstance(m, CONVOLUTIONS) for m in model.modules()):
            if not any(True for _ in model.parameters()):  # a runtime's session (ORT, OpenVINO) kept before it
                return f"the model runs outside torch now ({type(model).__name__}): no torch convolution to convert"
            return "the model has no 2-D convolution"
        if isinstance(model.__dict__.get("forward"), ChannelsLastForward):
            return "the model already runs channels-last"
        if not any(t.dim() == 4 and t.is_floating_point() for t in tensors_in(pipeline.example_batch())):
            return "the model's input has no 4-D floating tensor (an image batch) to hand over channels-last"
        return None

    def apply(self, pipeline: Pipeline, config: Any, context: Context) -> Applied:
        started = now()
        model = channels_last(pipeline.model)
        return Applied(pipeline=pipeline.replace(model=model), state={}, setup_seconds=now() - started)
