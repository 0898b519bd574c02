"""The units a cure can run a model's compute on, from the machine's calibration: per cure dtype,
how many times faster than eager fp32 its cure kernel ran (accel.core.cure_kernels), which dtypes
are worth timing the model in, and the fastest rate any cure can reach."""

from __future__ import annotations

from accel.core.cure_kernels import BASELINE_KERNEL
from accel.core.machine import Machine

# On an older calibration (square-GEMM peaks only), a "faster" dtype's peak must be this many times
# fp32's: below it the ratio is within calibration noise (and an emulated fp16 GEMM is far slower).
FASTER_UNIT_MIN_SPEEDUP = 1.5
# A cure kernel (accel.core.cure_kernels) this many times faster than eager fp32 at a Linear
# layer's size is worth timing the model in: a steady calibration's figures agree within 10%, so
# less could be noise, and on an AVX2 CPU the emulated bf16 kernel runs at a hundredth of fp32.
CURE_MIN_SPEEDUP = 1.1
# The dtypes a cure runs a model in: cast whole (precision.bf16 / precision.fp16), or its Linear
# layers quantized (quantize.int8_dynamic).
CURE_DTYPES = ("bf16", "fp16", "int8")
# The optimizer that runs a model in each dtype in PyTorch itself (what the dtype pass times);
# other runtimes' kernels (ONNX Runtime's int8 MatMul) are other cures, predicted on their own.
EAGER_CURES = {"bf16": "precision.bf16", "fp16": "precision.fp16", "int8": "quantize.int8_dynamic"}


def dtype_kernel_speedups(machine: Machine, cures: dict[str, str] | None = None) -> dict[str, tuple[float, str]]:
    """Per cure dtype, how many times faster than eager fp32 its fastest cure kernel (of the cure
    `cures` names for it, where given) ran in calibration (Machine.cure_speedup), as (ratio,
    kernel); on an older calibration without cure kernels, the square-GEMM peak ratio, as (ratio,
    "<dtype> GEMM peak")."""
    if machine.cure_gflops:
        found = {name: machine.cure_speedup(name, (cures or {}).get(name)) for name in CURE_DTYPES}
        return {name: speedup for name, speedup in found.items() if speedup is not None}
    fp32 = machine.peak_gflops or machine.peak_gflops_by_dtype.get("fp32") or 0.0
    by_dtype = machine.peak_gflops_by_dtype or {}
    return {
        name: (by_dtype[name] / fp32, f"{name} GEMM peak") for name in CURE_DTYPES if fp32 > 0 and by_dtype.get(name)
    }


def faster_dtypes(machine: Machine, cures: dict[str, str] | None = None) -> list[str]:
    """The cure dtypes whose cure kernel (of `cures`, where given) calibrated CURE_MIN_SPEEDUP x
    faster than fp32 or more (FASTER_UNIT_MIN_SPEEDUP x for a square-GEMM peak, on an older
    calibration)."""
    needed = CURE_MIN_SPEEDUP if machine.cure_gflops else FASTER_UNIT_MIN_SPEEDUP
    return [name for name, (ratio, _) in dtype_kernel_speedups(machine, cures).items() if ratio >= needed]


def fastest_unit(machine: Machine) -> tuple[float, str]:
    """The fastest rate a cure can get a model's compute to, as (GFLOP/s, what runs it): eager fp32
    Linear, the fp32 cure kernels and those of every faster dtype; on an older calibration, the
    fp32 GEMM peak. (0.0, "") when nothing was calibrated."""
    rates = []
    baseline = machine.cure_gflops.get(BASELINE_KERNEL)
    if baseline:
        rates.append((baseline, BASELINE_KERNEL))
    for name in ("fp32", *faster_dtypes(machine)):
        best = machine.best_cure_gflops(name)
        if best is not None:
            rates.append(best)
    if not rates:
        fp32 = machine.peak_gflops or machine.peak_gflops_by_dtype.get("fp32") or 0.0
        return (fp32, "fp32 GEMM peak") if fp32 else (0.0, "")
    return max(rates)
