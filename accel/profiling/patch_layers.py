"""Which layers of a CNN stage are local (each output pixel depends on a bounded input window), and
the window each maps an output interval to: the layer table the patch planner (accel.profiling.patch_plan) chains.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from torch import nn

ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Softplus,
    nn.Identity,
)
DROPOUT = (nn.Dropout, nn.Dropout2d, nn.AlphaDropout)
GLOBAL_POOLING = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d)
SPATIAL_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.LocalResponseNorm)
ATTENTION = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer, nn.Transformer)


@dataclasses.dataclass(frozen=True)
class AxisOp:
    """One layer along one spatial axis."""

    kernel: int = 1
    stride: int = 1
    pad_before: int = 0
    pad_after: int = 0
    dilation: int = 1

    def input_interval(self, a: int, b: int) -> tuple[int, int]:
        return a * self.stride - self.pad_before, (b - 1) * self.stride - self.pad_before + self.dilation * (
            self.kernel - 1
        ) + 1

    def output_size(self, size: int) -> int:
        return (size + self.pad_before + self.pad_after - self.dilation * (self.kernel - 1) - 1) // self.stride + 1


@dataclasses.dataclass(frozen=True, eq=False)
class LocalLayer:
    """A spatially local layer, with how to run it on an already padded tile."""

    module: nn.Module
    kind: str  # "conv", "maxpool", "avgpool", "avgpool_exclusive" or "elementwise"
    rows: AxisOp
    cols: AxisOp

    @property
    def pad_value(self) -> float:
        return -math.inf if self.kind == "maxpool" else 0.0

    def macs_per_output(self) -> int:
        if self.kind == "conv":
            m: Any = self.module
            return m.out_channels * (m.in_channels // m.groups) * self.rows.kernel * self.cols.kernel
        return 0


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _conv(module: nn.Conv2d, name: str) -> LocalLayer | str:
    if module.padding_mode != "zeros":
        return f"{name} pads with '{module.padding_mode}', only zero padding is patched"
    k, s, d = _pair(module.kernel_size), _pair(module.stride), _pair(module.dilation)
    pads: tuple[tuple[int, int], ...]
    if module.padding == "valid":
        pads = ((0, 0), (0, 0))
    elif module.padding == "same":
        totals = (d[0] * (k[0] - 1), d[1] * (k[1] - 1))
        pads = tuple((t // 2, t - t // 2) for t in totals)
    else:
        p = _pair(module.padding)
        pads = ((p[0], p[0]), (p[1], p[1]))
    axes = [AxisOp(k[i], s[i], pads[i][0], pads[i][1], d[i]) for i in range(2)]
    if any(max(a.pad_before, a.pad_after) >= a.dilation * (a.kernel - 1) + 1 for a in axes):
        # Border outputs would see only padding, and a tile there would have no real input.
        return f"{name} pads by as much as its kernel spans: border outputs see only padding"
    return LocalLayer(module, "conv", *axes)


def _max_pool(module: nn.MaxPool2d, name: str) -> LocalLayer | str:
    if module.ceil_mode or module.return_indices:
        return f"{name} with ceil_mode or return_indices is not patched"
    k, p, d = _pair(module.kernel_size), _pair(module.padding), _pair(module.dilation)
    s = _pair(module.stride if module.stride is not None else module.kernel_size)
    return LocalLayer(module, "maxpool", *[AxisOp(k[i], s[i], p[i], p[i], d[i]) for i in range(2)])


def _avg_pool(module: nn.AvgPool2d, name: str) -> LocalLayer | str:
    if module.ceil_mode or module.divisor_override is not None:
        return f"{name} with ceil_mode or divisor_override is not patched"
    k, p = _pair(module.kernel_size), _pair(module.padding)
    s = _pair(module.stride if module.stride is not None else module.kernel_size)
    kind = "avgpool" if module.count_include_pad or p == (0, 0) else "avgpool_exclusive"
    return LocalLayer(module, kind, *[AxisOp(k[i], s[i], p[i], p[i], 1) for i in range(2)])


def _batch_norm(module: nn.Module, name: str) -> LocalLayer | str:
    if module.training:
        return f"{name} in training mode normalizes over the batch and all positions (normalization over space)"
    return _elementwise(module, name)


def _dropout(module: nn.Module, name: str) -> LocalLayer | str:
    if module.training:
        return f"{name} in training mode draws a mask per run: patches would not match"
    return _elementwise(module, name)


def _elementwise(module: nn.Module, name: str) -> LocalLayer | str:
    return LocalLayer(module, "elementwise", AxisOp(), AxisOp())


def _not_local(why: str) -> Callable[[nn.Module, str], str]:
    return lambda module, name: f"{name} {why}"


# Each kind of layer, in the order they are tested, and how it is described: as a LocalLayer, or
# the reason it cannot sit in a patched stage.
_DESCRIBERS: tuple[tuple[Any, Callable[[Any, str], LocalLayer | str]], ...] = (
    (nn.Conv2d, _conv),
    (nn.MaxPool2d, _max_pool),
    (nn.AvgPool2d, _avg_pool),
    (nn.BatchNorm2d, _batch_norm),
    (DROPOUT, _dropout),
    (ELEMENTWISE, _elementwise),
    (GLOBAL_POOLING, _not_local("is global pooling: every output depends on the whole feature map")),
    (nn.Flatten, _not_local("flattens the feature map: the layers after it see all positions at once")),
    (SPATIAL_NORMS, _not_local("normalizes over space: statistics need the whole feature map")),
    (ATTENTION, _not_local("is attention: every position attends to all others")),
    (nn.Linear, _not_local("mixes all features of its input: not spatially local")),
)


def describe_layer(module: nn.Module) -> LocalLayer | str:
    """The layer as a LocalLayer, or the reason it cannot sit in a patched stage."""
    name = type(module).__name__
    for kinds, describe in _DESCRIBERS:
        if isinstance(module, kinds):
            return describe(module, name)
    return (
        f"{name} is not a layer patch inference knows to be spatially local (conv, pooling, eval batch norm, "
        "elementwise activations)"
    )


def flatten_layers(module: nn.Module) -> list[nn.Module]:
    """The leaf layers of nested nn.Sequential containers, in order."""
    if isinstance(module, nn.Sequential):
        return [leaf for child in module for leaf in flatten_layers(child)]
    return [module]


def local_prefix(layers: list[nn.Module]) -> tuple[list[LocalLayer], str | None]:
    """The longest run of leading layers that can be patched, and why it stops there (None: all)."""
    prefix: list[LocalLayer] = []
    for index, layer in enumerate(layers):
        described = describe_layer(layer)
        if isinstance(described, str):
            return prefix, f"layer {index} ({described})"
        prefix.append(described)
    return prefix, None
