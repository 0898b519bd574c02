"""The patch planner: which leading layers of a CNN can run patch by patch, and what that would cost.

Pure: it reads a model's layers and the activation sizes the memory pass recorded, and runs and
times nothing. The memory pass (accel.profiling.hardware) builds a PatchPlan with it, which the
memory_peak analyzer reads; `patch.inference` (accel.optimizing.optimizers) plans its candidates
with the same functions, so the finding's prediction and the cure look at the same stage.

Per spatial axis, a layer with kernel k, stride s, padding p (before) and dilation d maps the output
interval [a, b) to the input interval [a*s - p, (b-1)*s - p + d*(k-1) + 1). Chaining this backwards
through the stage from each output tile gives the input region each layer needs, halo included.

Predicted peak of a candidate (the first `prefix_layers` layers of the stage on a grid x grid split):
while the stage runs, its full input and its full output are live plus one tile's input and output
at the layer where that is largest; after it, each later layer's input and output. The largest of
these, against the same estimate for the unpatched model (each layer's input and output), gives the
predicted reduction of the measured peak.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from torch import nn

from accel.profiling.data import LayerActivation, PatchCandidatePlan, PatchPlan
from accel.profiling.patch_layers import LocalLayer, flatten_layers, local_prefix

# The grids patch.inference tries (MCUNetV2 uses 2x2 to 4x4).
DEFAULT_GRIDS = (2, 4)
# Split points tried: after each of the first few downsampling layers, and at the prefix's end.
MAX_SPLIT_POINTS = 4


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


def find_stem(model: Any) -> tuple[str, nn.Sequential] | str:
    """The Sequential to patch ("" is the model itself), or why there is none."""
    if not isinstance(model, nn.Module):
        return f"the model is a {type(model).__name__}, not a torch.nn.Module"
    if model.training:
        return "the model is in training mode: patch inference is for eval-mode inference"
    sequentials = (
        [("", model)]
        if isinstance(model, nn.Sequential)
        else [(name, child) for name, child in model.named_children() if isinstance(child, nn.Sequential)]
    )
    if not sequentials:
        return (
            f"{type(model).__name__} is neither an nn.Sequential nor has an nn.Sequential child "
            "(the supported shapes: a Sequential model, or a stem/features Sequential inside it)"
        )
    reasons = []
    for name, sequential in sequentials:
        prefix, stop = local_prefix(flatten_layers(sequential))
        if any(layer.kind == "conv" for layer in prefix):
            return name, sequential
        reasons.append(f"{name or 'the model'} starts with {stop or 'no convolution'}")
    return "no leading stage of spatially local layers to patch: " + "; ".join(reasons)


def split_points(sequential: nn.Sequential) -> list[int]:
    prefix, _ = local_prefix(flatten_layers(sequential))
    points: list[int] = []
    for index, layer in enumerate(prefix):
        if layer.rows.stride > 1 or layer.cols.stride > 1:
            end = index + 1
            while end < len(prefix) and prefix[end].kind == "elementwise":
                end += 1  # take the activation after a downsampling layer into the stage
            if end not in points:
                points.append(end)
    points = points[:MAX_SPLIT_POINTS]
    if len(prefix) not in points:
        points.append(len(prefix))
    return points


def _live_bytes(layer: LayerActivation, is_call_input: bool) -> int:
    """Bytes live while a layer runs, counting only what the model call allocates."""
    return layer.output_bytes + (0 if is_call_input else layer.input_bytes)


def predicted_peak_bytes(
    local: list[LocalLayer],
    recorded: list[LayerActivation],
    start: int,
    prefix_layers: int,
    grid: int,
) -> int:
    """The activation peak estimate with `local[:prefix_layers]` patched on a grid x grid split.

    `recorded` is every leaf layer's activation in execution order; the stage's layers are
    `recorded[start : start + prefix_layers]` (the same modules as `local`).
    """
    stage = recorded[start : start + prefix_layers]
    height, width = stage[0].input_shape[-2:]
    sizes = stage_sizes(local[:prefix_layers], height, width)
    out_h, out_w = sizes[-1]
    tile_bytes = 0
    for rows in split_ranges(out_h, grid):
        for cols in split_ranges(out_w, grid):
            plan = plan_tile(local[:prefix_layers], sizes, rows, cols)
            for index, (activation, (out_r, out_c), pads) in enumerate(zip(stage, plan.outputs, plan.pads)):
                in_h = (
                    (out_r[1] - out_r[0] - 1) * local[index].rows.stride
                    + local[index].rows.dilation * (local[index].rows.kernel - 1)
                    + 1
                )
                in_w = (
                    (out_c[1] - out_c[0] - 1) * local[index].cols.stride
                    + local[index].cols.dilation * (local[index].cols.kernel - 1)
                    + 1
                )
                full_in = sizes[index][0] * sizes[index][1]
                full_out = sizes[index + 1][0] * sizes[index + 1][1]
                tile_in = activation.input_bytes * in_h * in_w / full_in if full_in else 0
                # The first layer reads a view of the stage input, copied only where it is padded.
                if index == 0 and not any(p for pair in pads for p in pair):
                    tile_in = 0
                tile_out = activation.output_bytes * (out_r[1] - out_r[0]) * (out_c[1] - out_c[0]) / full_out
                tile_bytes = max(tile_bytes, int(tile_in + tile_out))
    stage_input = 0 if start == 0 else stage[0].input_bytes
    during = stage_input + stage[-1].output_bytes + tile_bytes
    others = [
        _live_bytes(layer, index == 0)
        for index, layer in enumerate(recorded)
        if not start <= index < start + prefix_layers
    ]
    return max([during, *others])


def unpatched_peak_bytes(recorded: list[LayerActivation]) -> int:
    """The same estimate for the model as it is: each layer's input and output."""
    return max((_live_bytes(layer, index == 0) for index, layer in enumerate(recorded)), default=0)


def plan_patches(
    model: Any, recorded: list[LayerActivation], modules: Sequence[Any], grids: tuple[int, ...] = DEFAULT_GRIDS
) -> PatchPlan | str:
    """The candidates patch.inference would try, each with its predicted peak; or why there are none.

    `recorded[i]` is the activation of leaf module `modules[i]` (execution order).
    """
    stem = find_stem(model)
    if isinstance(stem, str):
        return stem
    name, sequential = stem
    layers = flatten_layers(sequential)
    local, stop = local_prefix(layers)
    positions = {id(module): index for index, module in reversed(list(enumerate(modules)))}
    if id(layers[0]) not in positions:
        return "the stage's first layer did not run in the recorded call"
    start = positions[id(layers[0])]
    stage = recorded[start : start + len(local)]
    if len(stage) < len(local) or any(positions.get(id(m)) != start + i for i, m in enumerate(layers[: len(local)])):
        return "the stage's layers did not run in order in the recorded call"
    if len(stage[0].input_shape) != 4:
        return "the stage's input is not one 4-D image batch (N, C, H, W)"
    candidates = []
    for prefix_layers in split_points(sequential):
        for grid in grids:
            peak = predicted_peak_bytes(local, recorded, start, prefix_layers, grid)
            candidates.append(
                PatchCandidatePlan(
                    prefix_layers=prefix_layers,
                    grid=grid,
                    predicted_peak_bytes=peak,
                    halo_extra_compute_share=halo_extra_compute_share(
                        local[:prefix_layers], grid, *stage[0].input_shape[-2:]
                    ),
                )
            )
    return PatchPlan(
        module=name,
        stage_layers=len(layers),
        local_layers=len(local),
        stop_reason=stop,
        first_layer=start,
        unpatched_peak_bytes=unpatched_peak_bytes(recorded),
        candidates=tuple(candidates),
    )


def halo_extra_compute_share(local: list[LocalLayer], grid: int, height: int, width: int) -> float:
    """Extra multiply-adds of the overlapping halos, as a share of the unpatched stage's."""
    sizes = stage_sizes(local, height, width)
    full = sum(layer.macs_per_output() * sizes[i + 1][0] * sizes[i + 1][1] for i, layer in enumerate(local))
    if full == 0:
        return 0.0
    h, w = sizes[-1]
    plans = [plan_tile(local, sizes, r, c) for r in split_ranges(h, grid) for c in split_ranges(w, grid)]
    patched = sum(
        layer.macs_per_output() * (r[1] - r[0]) * (c[1] - c[0])
        for plan in plans
        for layer, (r, c) in zip(local, plan.outputs)
    )
    return patched / full - 1.0
