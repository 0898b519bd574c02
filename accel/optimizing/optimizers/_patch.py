"""Exact patch-based inference of a CNN's leading stage (after MCUNetV2).

Per spatial axis, a layer with kernel k, stride s, padding p (before) and dilation d maps the output
interval [a, b) to the input interval [a*s - p, (b-1)*s - p + d*(k-1) + 1). Chaining this backwards
through the stage from each output tile gives the input region each layer needs, halo included.
Each layer then runs on its tile *without* its own padding; wherever the needed region reaches
outside the real feature map, the tile is filled with what the padding would have supplied (zeros
for convolutions and average pooling, -inf for max pooling; for average pooling that excludes padding
from the divisor, the divisor is counted from a mask). Every output tile is therefore equal to the
same region of the full run, up to float rounding, and is written into the stage's output.

Supported: a chain of spatially local layers (Conv2d with any stride, padding, dilation and groups
and zero padding mode; MaxPool2d; AvgPool2d; BatchNorm2d in eval mode; elementwise activations;
Dropout in eval mode). `describe_layer` names the reason any other layer cannot be patched.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
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

    def run_unpadded(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        m = self.module
        if self.kind == "conv":
            return F.conv2d(x, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)
        if self.kind == "maxpool":
            return F.max_pool2d(
                x,
                (self.rows.kernel, self.cols.kernel),
                (self.rows.stride, self.cols.stride),
                0,
                (self.rows.dilation, self.cols.dilation),
            )
        if self.kind in ("avgpool", "avgpool_exclusive"):
            kernel, stride = (self.rows.kernel, self.cols.kernel), (self.rows.stride, self.cols.stride)
            mean = F.avg_pool2d(x, kernel, stride, 0)
            if self.kind == "avgpool" or mask is None:
                return mean
            # Padding is excluded from the divisor: divide the window sum by the real positions in it.
            real_share = F.avg_pool2d(mask, kernel, stride, 0)
            return mean / real_share
        return m(x)

    def macs_per_output(self) -> int:
        if self.kind == "conv":
            m = self.module
            return m.out_channels * (m.in_channels // m.groups) * self.rows.kernel * self.cols.kernel
        return 0


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def describe_layer(module: nn.Module) -> LocalLayer | str:
    """The layer as a LocalLayer, or the reason it cannot sit in a patched stage."""
    name = type(module).__name__
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            return f"{name} pads with '{module.padding_mode}', only zero padding is patched"
        k, s, d = _pair(module.kernel_size), _pair(module.stride), _pair(module.dilation)
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
    if isinstance(module, nn.MaxPool2d):
        if module.ceil_mode or module.return_indices:
            return f"{name} with ceil_mode or return_indices is not patched"
        k, p, d = _pair(module.kernel_size), _pair(module.padding), _pair(module.dilation)
        s = _pair(module.stride if module.stride is not None else module.kernel_size)
        return LocalLayer(module, "maxpool", *[AxisOp(k[i], s[i], p[i], p[i], d[i]) for i in range(2)])
    if isinstance(module, nn.AvgPool2d):
        if module.ceil_mode or module.divisor_override is not None:
            return f"{name} with ceil_mode or divisor_override is not patched"
        k, p = _pair(module.kernel_size), _pair(module.padding)
        s = _pair(module.stride if module.stride is not None else module.kernel_size)
        kind = "avgpool" if module.count_include_pad or p == (0, 0) else "avgpool_exclusive"
        return LocalLayer(module, kind, *[AxisOp(k[i], s[i], p[i], p[i], 1) for i in range(2)])
    if isinstance(module, nn.BatchNorm2d):
        if module.training:
            return f"{name} in training mode normalizes over the batch and all positions (normalization over space)"
        return LocalLayer(module, "elementwise", AxisOp(), AxisOp())
    if isinstance(module, DROPOUT):
        if module.training:
            return f"{name} in training mode draws a mask per run: patches would not match"
        return LocalLayer(module, "elementwise", AxisOp(), AxisOp())
    if isinstance(module, ELEMENTWISE):
        return LocalLayer(module, "elementwise", AxisOp(), AxisOp())
    if isinstance(module, GLOBAL_POOLING):
        return f"{name} is global pooling: every output depends on the whole feature map"
    if isinstance(module, nn.Flatten):
        return f"{name} flattens the feature map: the layers after it see all positions at once"
    if isinstance(module, SPATIAL_NORMS):
        return f"{name} normalizes over space: statistics need the whole feature map"
    if isinstance(module, ATTENTION):
        return f"{name} is attention: every position attends to all others"
    if isinstance(module, nn.Linear):
        return f"{name} mixes all features of its input: not spatially local"
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


def split_ranges(size: int, parts: int) -> list[tuple[int, int]]:
    parts = max(1, min(parts, size))
    edges = [round(i * size / parts) for i in range(parts + 1)]
    return [(edges[i], edges[i + 1]) for i in range(parts)]


@dataclasses.dataclass(frozen=True)
class TilePlan:
    """For one output tile: per layer, the output region computed and the padding of its input."""

    output_rows: tuple[int, int]
    output_cols: tuple[int, int]
    input_rows: tuple[int, int]  # clipped to the real input
    input_cols: tuple[int, int]
    # per layer: ((pad_top, pad_bottom), (pad_left, pad_right)) to add before running it, and the
    # (rows, cols) of its output that the tile computes.
    pads: tuple[tuple[tuple[int, int], tuple[int, int]], ...]
    outputs: tuple[tuple[tuple[int, int], tuple[int, int]], ...]


def stage_sizes(layers: list[LocalLayer], height: int, width: int) -> list[tuple[int, int]]:
    sizes = [(height, width)]
    for layer in layers:
        h, w = sizes[-1]
        sizes.append((layer.rows.output_size(h), layer.cols.output_size(w)))
    return sizes


def plan_tile(
    layers: list[LocalLayer], sizes: list[tuple[int, int]], rows: tuple[int, int], cols: tuple[int, int]
) -> TilePlan:
    need = [rows, cols]
    pads: list = []
    outputs: list = []
    for index in range(len(layers) - 1, -1, -1):
        layer = layers[index]
        h, w = sizes[index + 1]
        out_r = (max(need[0][0], 0), min(need[0][1], h))
        out_c = (max(need[1][0], 0), min(need[1][1], w))
        in_r = layer.rows.input_interval(*out_r)
        in_c = layer.cols.input_interval(*out_c)
        ih, iw = sizes[index]
        pads.append(((max(0, -in_r[0]), max(0, in_r[1] - ih)), (max(0, -in_c[0]), max(0, in_c[1] - iw))))
        outputs.append((out_r, out_c))
        need = [in_r, in_c]
    ih, iw = sizes[0]
    return TilePlan(
        rows,
        cols,
        (max(need[0][0], 0), min(need[0][1], ih)),
        (max(need[1][0], 0), min(need[1][1], iw)),
        tuple(reversed(pads)),
        tuple(reversed(outputs)),
    )


def run_tile(layers: list[LocalLayer], x: torch.Tensor, plan: TilePlan) -> torch.Tensor:
    tile = x[..., plan.input_rows[0] : plan.input_rows[1], plan.input_cols[0] : plan.input_cols[1]]
    for layer, ((top, bottom), (left, right)) in zip(layers, plan.pads):
        mask = None
        if top or bottom or left or right:
            if layer.kind == "avgpool_exclusive":
                mask = F.pad(
                    torch.ones((1, 1) + tuple(tile.shape[-2:]), dtype=tile.dtype, device=tile.device),
                    (left, right, top, bottom),
                )
            tile = F.pad(tile, (left, right, top, bottom), value=layer.pad_value)
        elif layer.kind == "avgpool_exclusive":
            mask = torch.ones((1, 1) + tuple(tile.shape[-2:]), dtype=tile.dtype, device=tile.device)
        tile = layer.run_unpadded(tile, mask)
    return tile


class PatchedStage(nn.Module):
    """Runs `layers` tile by tile over a grid x grid split of their output and stitches the tiles."""

    def __init__(self, layers: list[nn.Module], grid: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.grid = grid
        described = [describe_layer(layer) for layer in layers]
        refused = [d for d in described if isinstance(d, str)]
        if refused:
            raise ValueError(refused[0])
        self._local = described

    def plans(self, height: int, width: int) -> list[TilePlan]:
        sizes = stage_sizes(self._local, height, width)
        h, w = sizes[-1]
        return [
            plan_tile(self._local, sizes, r, c) for r in split_ranges(h, self.grid) for c in split_ranges(w, self.grid)
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            for layer in self.layers:
                x = layer(x)
            return x
        plans = self.plans(x.shape[-2], x.shape[-1])
        out = None
        for plan in plans:
            tile = run_tile(self._local, x, plan)
            if out is None:
                h, w = stage_sizes(self._local, x.shape[-2], x.shape[-1])[-1]
                out = tile.new_empty(tile.shape[:-2] + (h, w))
            out[..., plan.output_rows[0] : plan.output_rows[1], plan.output_cols[0] : plan.output_cols[1]] = tile
            del tile
        return out

    def halo_extra_compute_share(self, height: int, width: int) -> float:
        """Extra multiply-adds of the overlapping halos, as a share of the unpatched stage's."""
        sizes = stage_sizes(self._local, height, width)
        full = sum(layer.macs_per_output() * sizes[i + 1][0] * sizes[i + 1][1] for i, layer in enumerate(self._local))
        if full == 0:
            return 0.0
        patched = sum(
            layer.macs_per_output() * (r[1] - r[0]) * (c[1] - c[0])
            for plan in self.plans(height, width)
            for layer, (r, c) in zip(self._local, plan.outputs)
        )
        return patched / full - 1.0


class PatchedSequential(nn.Module):
    """A patched leading stage followed by the remaining layers, run normally."""

    def __init__(self, stage: PatchedStage, rest: list[nn.Module]) -> None:
        super().__init__()
        self.stage = stage
        self.rest = nn.Sequential(*rest)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rest(self.stage(x))


def patch_sequential(sequential: nn.Sequential, prefix_layers: int, grid: int) -> PatchedSequential:
    """A module equal to `sequential` whose first `prefix_layers` leaf layers run patch by patch.
    The layers (and their weights) are shared with `sequential`, not copied."""
    layers = flatten_layers(sequential)
    return PatchedSequential(PatchedStage(layers[:prefix_layers], grid), layers[prefix_layers:])
