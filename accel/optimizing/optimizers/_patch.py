"""Exact patch-based inference of a CNN's leading stage (after MCUNetV2): running the planned tiles.

The planner (accel.profiling.patch_plan) says which layers are spatially local and which input
region, halo included, each output tile needs. Here each layer then runs on its tile *without* its
own padding; wherever the needed region reaches outside the real feature map, the tile is filled with
what the padding would have supplied (zeros for convolutions and average pooling, -inf for max
pooling; for average pooling that excludes padding from the divisor, the divisor is counted from a
mask). Every output tile is therefore equal to the same region of the full run, up to float
rounding, and is written into the stage's output.

Supported: a chain of spatially local layers (Conv2d with any stride, padding, dilation and groups
and zero padding mode; MaxPool2d; AvgPool2d; BatchNorm2d in eval mode; elementwise activations;
Dropout in eval mode). `describe_layer` names the reason any other layer cannot be patched.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from accel.profiling.patch_layers import LocalLayer, describe_layer, flatten_layers
from accel.profiling.patch_plan import (
    TilePlan,
    halo_extra_compute_share,
    plan_tile,
    split_ranges,
    stage_sizes,
)


def run_unpadded(layer: LocalLayer, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The layer on an already padded tile (its own padding left out)."""
    m: Any = layer.module
    if layer.kind == "conv":
        return F.conv2d(x, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)
    if layer.kind == "maxpool":
        return F.max_pool2d(
            x,
            (layer.rows.kernel, layer.cols.kernel),
            (layer.rows.stride, layer.cols.stride),
            0,
            (layer.rows.dilation, layer.cols.dilation),
        )
    if layer.kind in ("avgpool", "avgpool_exclusive"):
        kernel, stride = (layer.rows.kernel, layer.cols.kernel), (layer.rows.stride, layer.cols.stride)
        mean = F.avg_pool2d(x, kernel, stride, 0)
        if layer.kind == "avgpool" or mask is None:
            return mean
        # Padding is excluded from the divisor: divide the window sum by the real positions in it.
        real_share = F.avg_pool2d(mask, kernel, stride, 0)
        return mean / real_share
    return m(x)


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
        tile = run_unpadded(layer, tile, mask)
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
        self._local = [d for d in described if isinstance(d, LocalLayer)]

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
        if out is None:
            raise ValueError("a patched stage needs at least one output tile")
        return out

    def halo_extra_compute_share(self, height: int, width: int) -> float:
        """Extra multiply-adds of the overlapping halos, as a share of the unpatched stage's."""
        return halo_extra_compute_share(self._local, self.grid, height, width)


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
