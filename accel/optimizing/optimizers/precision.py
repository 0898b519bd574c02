"""`precision.bf16` / `precision.fp16`: run the model in half precision where the device has fast
units for it, with float32 tensors in and out.

Whether the units are fast comes from the machine's calibration (peak GFLOP/s per dtype) when it
has been calibrated; otherwise a short matmul probe measures it once per process. On a CPU without
bf16/fp16 instructions, half precision runs several times slower than float32, so the optimizer
does not apply there and says why.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from typing import Any, ClassVar

import torch

from accel.core.dtypes import short_name
from accel.core.measure import now
from accel.core.pipeline import Pipeline
from accel.optimizing.optimizers import Applied, Context, Optimizer, register
from accel.optimizing.optimizers._model_io import floating_outputs_to, with_forward

MODES = ("cast", "autocast")
# Half precision is worth trying when its matmul runs at least 1.2x the float32 rate: below that the
# casts at the model's edges eat the gain.
MIN_FAST_RATIO = 1.2
PROBE_SIZE = 512
PROBE_REPEATS = 5


@dataclasses.dataclass(frozen=True)
class PrecisionConfig:
    mode: str = "cast"  # cast: weights and inputs in the half dtype; autocast: torch.autocast per op

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")


class HalfPrecisionForward:
    """A model's forward in half precision behind a float32 interface."""

    def __init__(self, forward: Any, dtype: torch.dtype, mode: str, device_type: str) -> None:
        self.forward = forward
        self.dtype = dtype
        self.mode = mode
        self.device_type = device_type

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "autocast":
            with torch.autocast(self.device_type, dtype=self.dtype):
                output = self.forward(*args, **kwargs)
        else:
            output = self.forward(*floating_outputs_to(args, self.dtype), **floating_outputs_to(kwargs, self.dtype))
        return floating_outputs_to(output, torch.float32)


def half_precision(model: torch.nn.Module, dtype: torch.dtype, mode: str, device_type: str) -> torch.nn.Module:
    """The model, as its own class (generate() and every other method kept), computing in `dtype`:
    a copy of its weights in `dtype` (cast), or autocast around the float32 weights it shares."""
    source = copy.deepcopy(model).to(dtype) if mode == "cast" else model
    return with_forward(source, lambda forward: HalfPrecisionForward(forward, dtype, mode, device_type))


def _calibrated_ratio(context: Context, dtype_name: str) -> float | None:
    """How many times faster than eager float32 this cure's kernel ran in the context machine's
    calibration (Machine.cure_speedup: a half-precision Linear, what the cure runs); on an older
    calibration without cure kernels, the half-precision GEMM peak over float32's."""
    machine = context.machine
    short = short_name(dtype_name) or dtype_name
    speedup = machine.cure_speedup(short)
    if speedup is not None:
        return speedup[0]
    peaks = dict(machine.peak_gflops_by_dtype or {})
    half = peaks.get(dtype_name) or peaks.get(short)
    single = peaks.get("float32") or peaks.get("fp32")
    if half and single:
        return half / single
    return None


@functools.lru_cache(maxsize=8)
def probe_ratio(dtype_name: str, device: str = "cpu") -> float:
    """float32 matmul time / half matmul time, measured on the device (best of a few calls)."""
    dtype = getattr(torch, dtype_name)

    def best(dt: torch.dtype) -> float:
        a = torch.randn(PROBE_SIZE, PROBE_SIZE, device=device).to(dt)
        b = torch.randn(PROBE_SIZE, PROBE_SIZE, device=device).to(dt)
        times = []
        for _ in range(PROBE_REPEATS):
            t0 = now()
            a @ b
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(now() - t0)
        return min(times)

    return best(torch.float32) / best(dtype)


class _HalfPrecision(Optimizer):
    dtype_name: ClassVar[str] = "bfloat16"
    slot: ClassVar[str] = "model"
    Config = PrecisionConfig

    def fast_ratio(self, context: Context) -> tuple[float, str]:
        ratio = _calibrated_ratio(context, self.dtype_name)
        if ratio is not None:
            return ratio, "calibration"
        device = "cuda" if context.machine.is_cuda else "cpu"
        return probe_ratio(self.dtype_name, device), "probe"

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        if not isinstance(pipeline.model, torch.nn.Module):
            return "the model is not a torch.nn.Module"
        if any(p.dtype != torch.float32 for p in pipeline.model.parameters()):
            return "the model's weights are not float32"
        ratio, how = self.fast_ratio(context)
        if ratio < MIN_FAST_RATIO:
            return (
                f"{self.dtype_name} matmul runs at {ratio:.2f}x of float32 on this device ({how}); "
                f"needs {MIN_FAST_RATIO}x"
            )
        return None

    def apply(self, pipeline: Pipeline, config: PrecisionConfig, context: Context) -> Applied:
        started = now()
        device_type = "cuda" if context.machine.is_cuda else "cpu"
        model = half_precision(pipeline.model, getattr(torch, self.dtype_name), config.mode, device_type)
        ratio, how = self.fast_ratio(context)
        return Applied(
            pipeline=pipeline.replace(model=model),
            state={"dtype": self.dtype_name, "mode": config.mode, "device_type": device_type},
            setup_seconds=now() - started,
            notes={"matmul_ratio": round(ratio, 2), "ratio_from": how},
        )

    def restore(self, pipeline: Pipeline, config: PrecisionConfig, state: dict[str, Any], lock_dir: Any) -> Pipeline:
        model = half_precision(
            pipeline.model, getattr(torch, self.dtype_name), config.mode, state.get("device_type", "cpu")
        )
        return pipeline.replace(model=model)


@register
class Bf16(_HalfPrecision):
    name = "precision.bf16"
    numerics: ClassVar[str] = "float16"
    cures = ("compute_bound", "memory_bandwidth", "straggler")
    description = "bfloat16 weights and activations (float32 in and out), where the device has fast bf16 units."
    dtype_name = "bfloat16"


@register
class Fp16(_HalfPrecision):
    name = "precision.fp16"
    numerics: ClassVar[str] = "float16"
    cures = ("compute_bound", "memory_bandwidth")
    description = "float16 weights and activations (float32 in and out), where the device has fast fp16 units."
    dtype_name = "float16"
