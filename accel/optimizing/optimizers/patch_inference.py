"""`patch.inference`: run a CNN's leading stage patch by patch to cut its peak memory (MCUNetV2).

Supported model shapes: an `nn.Sequential` (nested Sequentials are flattened), or any module with an
`nn.Sequential` child (say `features` or `stem`) whose leading layers are spatially local; the child
is swapped for an equal module whose leading layers run patch by patch (see _patch.py), in a shallow
copy of the model that shares its weights. The candidates (split points and grids) come from the
planner memory_peak predicts with (accel.profiling.patch_plan); the split point (after which layer
the stage ends) and the n x n grid are chosen by measured peak memory on the example batch; a candidate whose
output differs from the original by more than 1e-5 (relative, fp32) is never chosen.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from accel.core.errors import AccelError
from accel.core.measure import peak_memory_bytes, time_calls
from accel.core.pipeline import Pipeline, call_unpacked
from accel.optimizing.optimizers import Applied, Context, Optimizer, register
from accel.optimizing.optimizers._patch import patch_sequential
from accel.profiling.patch_plan import DEFAULT_GRIDS, find_stem, split_points

EXACT_RELATIVE_TOLERANCE = 1e-5
# Every candidate that reaches this share of the unpatched peak (MCUNetV2's halving and more) is good
# enough on memory; among those the fastest measured wins, since more, smaller tiles cost time.
DEFAULT_MAX_PEAK_SHARE = 0.5
# At most this many of the lowest-peak candidates are timed.
MAX_TIMED_CANDIDATES = 4
TIMING_BUDGET_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class PatchConfig:
    grids: tuple[int, ...] = DEFAULT_GRIDS
    prefix_layers: int | None = None  # None: choose by measurement
    max_peak_share: float = DEFAULT_MAX_PEAK_SHARE

    def __post_init__(self) -> None:
        grids = tuple(self.grids)
        object.__setattr__(self, "grids", grids)
        if not grids or any(not isinstance(g, int) or g < 1 for g in grids):
            raise ValueError(f"grids must be positive ints, got {self.grids}")
        if not 0 < self.max_peak_share <= 1:
            raise ValueError(f"max_peak_share must lie in (0, 1], got {self.max_peak_share}")
        if self.prefix_layers is not None and self.prefix_layers < 1:
            raise ValueError(f"prefix_layers must be >= 1, got {self.prefix_layers}")


@dataclasses.dataclass(frozen=True)
class PatchCandidate:
    module: str  # "" for the model itself, else the name of its Sequential child
    prefix_layers: int
    grid: int
    peak_bytes: int
    halo_extra_compute_share: float
    max_relative_error: float


def with_patched(model: nn.Module, name: str, prefix_layers: int, grid: int) -> nn.Module:
    """A model equal to `model` with the stage patched; weights are shared, `model` is unchanged."""
    if name == "":
        if not isinstance(model, nn.Sequential):
            raise TypeError("the patched stage must be an nn.Sequential")
        return patch_sequential(model, prefix_layers, grid)
    stem = model._modules[name]
    if not isinstance(stem, nn.Sequential):
        raise TypeError(f"the patched stage {name!r} must be an nn.Sequential")
    patched = copy.copy(model)
    patched._modules = dict(model._modules)
    patched._modules[name] = patch_sequential(stem, prefix_layers, grid)
    return patched


def relative_error(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    scale = reference.abs().max().item() or 1.0
    return (reference - candidate).abs().max().item() / scale


def _peak(model: Any, batch: Any) -> int:
    def forward() -> None:
        with torch.inference_mode():
            call_unpacked(model, batch)

    # CPU allocation events are deterministic for a given model and input: one profiled run is enough.
    return peak_memory_bytes(forward)


@register
class PatchInference(Optimizer):
    name = "patch.inference"
    cures = ("memory_peak",)
    description = "Run the CNN's leading stage patch by patch (exact halos) to cut peak activation memory."
    Config = PatchConfig
    slot = "model"

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        stem = find_stem(pipeline.model)
        if isinstance(stem, str):
            return stem
        batch = pipeline.example_batch()
        tensor = batch[0] if isinstance(batch, tuple) and len(batch) == 1 else batch
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 4:
            return "the model input is not one 4-D image batch (N, C, H, W)"
        return None

    def search(self, pipeline: Pipeline, config: PatchConfig) -> tuple[int, list[PatchCandidate], str, nn.Sequential]:
        stem = find_stem(pipeline.model)
        if isinstance(stem, str):
            raise AccelError(f"patch.inference cannot apply: {stem}", "it applies to CNNs with a Sequential stem")
        name, sequential = stem
        batch = pipeline.example_batch()
        with torch.inference_mode():
            reference = call_unpacked(pipeline.model, batch)
        baseline = _peak(pipeline.model, batch)  # after the reference run above, which warmed it up
        image = batch[0] if isinstance(batch, tuple) else batch
        points = [config.prefix_layers] if config.prefix_layers else split_points(sequential)
        candidates = []
        for prefix_layers in points:
            for grid in config.grids:
                model = with_patched(pipeline.model, name, prefix_layers, grid)
                with torch.inference_mode():
                    error = relative_error(reference, call_unpacked(model, batch))
                stage: Any = getattr(model if name == "" else model._modules[name], "stage")
                candidates.append(
                    PatchCandidate(
                        name,
                        prefix_layers,
                        grid,
                        _peak(model, batch),
                        stage.halo_extra_compute_share(image.shape[-2], image.shape[-1]),
                        error,
                    )
                )
        return baseline, candidates, name, sequential

    def apply(self, pipeline: Pipeline, config: PatchConfig, context: Context) -> Applied:
        baseline, candidates, name, _ = self.search(pipeline, config)
        exact = [c for c in candidates if c.max_relative_error <= EXACT_RELATIVE_TOLERANCE]
        if not exact:
            return Applied(
                pipeline,
                state={},
                notes={"chosen": None, "reason": "no candidate matched within 1e-5", "peak_bytes_before": baseline},
            )
        good = [c for c in exact if c.peak_bytes <= config.max_peak_share * baseline]
        shortlist = sorted(good or exact, key=lambda c: c.peak_bytes)[: MAX_TIMED_CANDIDATES if good else 1]
        seconds = {c: self._seconds(pipeline, name, c) for c in shortlist} if len(shortlist) > 1 else {}
        chosen = min(shortlist, key=lambda c: seconds.get(c, 0.0))
        model = with_patched(pipeline.model, name, chosen.prefix_layers, chosen.grid)
        notes = {
            "module": name or "(model)",
            "prefix_layers": chosen.prefix_layers,
            "grid": chosen.grid,
            "peak_bytes_before": baseline,
            "peak_bytes_after": chosen.peak_bytes,
            "peak_ratio": chosen.peak_bytes / baseline if baseline else 1.0,
            "halo_extra_compute_share": chosen.halo_extra_compute_share,
            "max_relative_error": chosen.max_relative_error,
            "candidates": [dataclasses.asdict(c) for c in candidates],
            "timed_seconds": {f"{c.prefix_layers} layers, {c.grid}x{c.grid}": s for c, s in seconds.items()},
        }
        state = {"module": name, "prefix_layers": chosen.prefix_layers, "grid": chosen.grid}
        return Applied(pipeline.replace(model=model), state=state, notes=notes)

    @staticmethod
    def _seconds(pipeline: Pipeline, name: str, candidate: PatchCandidate) -> float:
        model = with_patched(pipeline.model, name, candidate.prefix_layers, candidate.grid)
        batch = pipeline.example_batch()

        def forward() -> None:
            with torch.inference_mode():
                call_unpacked(model, batch)

        return time_calls(forward, warmup=1, min_repeats=3, budget_seconds=TIMING_BUDGET_SECONDS).median

    def restore(self, pipeline: Pipeline, config: PatchConfig, state: dict[str, Any], lock_dir: Path) -> Pipeline:
        if not state:
            return pipeline
        model = with_patched(pipeline.model, state["module"], int(state["prefix_layers"]), int(state["grid"]))
        return pipeline.replace(model=model)
