"""One replicate: what a fresh bench process measures, and the fingerprint of where it ran.

Runs inside the process accel.gating.bench starts (or inline, for counts): it loads the pipeline,
warms up, times calls of the model on one example batch under collector_off, and counts its work
(FLOPs, bytes, ops, parameter bytes, kernel launches). Plain JSON-ready data out.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import platform
import subprocess
from typing import Any, Callable

import torch

from accel._version import __version__
from accel.core.machine import cpu_model_name, usable_cores
from accel.gating.process import BenchConfig, Side, collector_off, load_side, user_modules


@dataclasses.dataclass(frozen=True)
class Replicate:
    """One fresh process's measurements (seconds per call of the model on one batch)."""

    median_seconds: float
    p90_seconds: float
    p99_seconds: float
    calls: int
    batch_samples: int
    peak_memory_bytes: int | None = None
    first_call_seconds: float | None = None

    def __post_init__(self) -> None:
        # A replicate read back from a baseline file is input: each field is checked for its type
        # too, so a wrong one is the baseline's error here rather than a crash in the statistics.
        for name in ("median_seconds", "p90_seconds", "p99_seconds", "first_call_seconds"):
            value = getattr(self, name)
            if not (value is None and name == "first_call_seconds") and not _finite_number(value):
                raise ValueError(f"Replicate: {name} must be a finite number, got {value!r}")
        if not (0 <= self.median_seconds <= self.p90_seconds <= self.p99_seconds):
            raise ValueError("Replicate: need 0 <= median <= p90 <= p99 seconds")
        for name, least in (("calls", 1), ("batch_samples", 0), ("peak_memory_bytes", 0)):
            value = getattr(self, name)
            if value is None and name == "peak_memory_bytes":
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
                raise ValueError(f"Replicate: {name} must be a whole number >= {least}, got {value!r}")

    @property
    def samples_per_s(self) -> float:
        return self.batch_samples / self.median_seconds if self.median_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "samples_per_s": self.samples_per_s}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Replicate":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _finite_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def environment() -> dict[str, Any]:
    """The fingerprint of where numbers were measured; timings compare only within one."""
    env: dict[str, Any] = {
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cpu_model": cpu_model_name(),
        "cores": usable_cores(),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "accel_version": __version__,
        "python_version": platform.python_version(),
        "platform": platform.system().lower(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = props.name
        env["gpu_memory_bytes"] = int(props.total_memory)
        env.update(_gpu_clocks())
    return env


def _gpu_clocks() -> dict[str, Any]:
    """SM clock, its maximum and throttle reasons from nvidia-smi, when it is there."""
    query = "clocks.sm,clocks.max.sm,clocks_throttle_reasons.active"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    parts = [p.strip() for p in out.split(",")]
    if len(parts) != 3:
        return {}
    return {"gpu_sm_clock_mhz": parts[0], "gpu_max_sm_clock_mhz": parts[1], "gpu_throttle_reasons": parts[2]}


# Fields that must match for timings to be comparable; counts are machine-independent.
TIMING_FINGERPRINT = ("device", "cpu_model", "cores", "threads", "torch_version", "gpu")


def environment_mismatch(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The fingerprint fields that differ, as 'field: stored != current'."""
    return [
        f"{key}: {stored.get(key)!r} != {current.get(key)!r}"
        for key in TIMING_FINGERPRINT
        if stored.get(key) != current.get(key)
    ]


def measure_here(
    side: Side, config: BenchConfig, *, timing: bool = True, counts: bool = False, apply_env: bool = True
) -> dict[str, Any]:
    """Load the pipeline in this process and measure it; returns plain JSON-ready data."""
    from accel.core.measure import device_sync, peak_memory_bytes, time_calls
    from accel.core.pipeline import batch_length

    pipeline = load_side(side, config, apply_env=apply_env)
    batch = pipeline.example_batch()
    device = "cuda" if torch.cuda.is_available() else None

    def call() -> Any:
        with torch.inference_mode():
            return pipeline.forward(batch)

    result: dict[str, Any] = {"environment": environment(), "pid": os.getpid(), "modules": user_modules()}
    if timing:
        # target half-width 0: never stop early, spend the budget, so every replicate is alike.
        with collector_off():
            measured = time_calls(
                call,
                warmup=config.warmup_calls,
                min_repeats=config.min_calls,
                max_repeats=config.max_calls,
                budget_seconds=config.budget_seconds,
                target_relative_half_width=0.0,
                sync=device_sync(device),
            )
        peak = peak_memory_bytes(call, device) if config.memory else None
        result["replicate"] = Replicate(
            median_seconds=measured.median,
            p90_seconds=max(measured.p90, measured.median),
            p99_seconds=max(measured.p99, measured.p90, measured.median),
            calls=measured.count,
            batch_samples=batch_length(batch),
            peak_memory_bytes=peak,
            first_call_seconds=measured.first_call_seconds,
        ).to_dict()
    if counts:
        # Counted outside inference_mode: under it matmuls reach the dispatcher in a form the
        # FLOP formulas do not see.
        result["counts"] = count_work(lambda: pipeline.forward(batch), pipeline.model)
    return result


def count_work(call: Callable[[], Any], model: Any) -> dict[str, Any]:
    """Machine-independent counts of one call (accel.core.counts), plus the model's parameter bytes."""
    from accel.core.counts import count_forward, parameter_bytes

    module = model if isinstance(model, torch.nn.Module) else None
    counted = count_forward(call, module).to_dict()
    data = {
        key: counted[key]
        for key in ("flops", "bytes_moved", "op_count", "kernel_launches")
        if counted.get(key) is not None
    }
    data["parameter_bytes"] = parameter_bytes(module) if module is not None else 0
    if torch.cuda.is_available() and "kernel_launches" not in data:
        data["kernel_launches"] = count_kernel_launches(call)
    return data


def count_kernel_launches(call: Callable[[], Any]) -> int:
    """Device activities (kernels, copies, memsets) one call puts on the GPU, from torch.profiler."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    call()  # lazy initialization (cuBLAS handles, autotuning) is not the steady state
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize()
    return sum(1 for event in prof.events() if event.device_type == DeviceType.CUDA)
