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
import math
from typing import Any, Callable, Sequence

from torch import nn

from accel.profiling.data import LayerActivation, PatchCandidatePlan, PatchPlan

# The grids patch.inference tries (MCUNetV2 uses 2x2 to 4x4).
DEFAULT_GRIDS = (2, 4)
# Split points tried: after each of the first few downsampling layers, and at the prefix's end.
MAX_SPLIT_POINTS = 4

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
