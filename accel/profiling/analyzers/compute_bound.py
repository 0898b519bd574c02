"""compute_bound: the model's time goes to ops above the ridge point, limited by arithmetic units.

A faster dtype helps only where this device has faster units for it: calibration measured peak
GFLOP/s per dtype, and a dtype counts as faster when its GEMM peak is FASTER_UNIT_MIN_SPEEDUP x
fp32's or more (on a CPU without native fp16, fp16 GEMMs are emulated and far slower). Impact:
compute-bound time x (1 - 1/speed-up of the best faster unit). With no faster unit, the model runs
at the machine's limit: the finding stays low.
"""

from __future__ import annotations

from accel.core.machine import Machine
from accel.profiling.analyzers import ANALYZERS
from accel.profiling.costmodel import CostModel, split_roofline
from accel.profiling.data import ProfileData, model_time_share, share_of_model_time
from accel.profiling.report import LOW_IMPACT, Finding

MIN_COMPUTE_SHARE = 0.5
# Below this measured peak ratio a "faster" dtype is within calibration noise of fp32.
FASTER_UNIT_MIN_SPEEDUP = 1.5
# Calibration peaks are for one plain GEMM; a whole model gains less (conversions, non-GEMM ops),
# so the predicted speed-up is capped here.
MAX_PREDICTED_SPEEDUP = 4.0
# Which optimizer turns the model to each dtype; int8 dynamic quantization covers Linear layers.
CURES = {"bf16": "precision.bf16", "fp16": "precision.fp16", "int8": "quantize.int8_dynamic"}
# An ONNX model is cured inside ONNX Runtime: int8 dynamic quantization of its MatMuls only.
ONNX_CURES = {"int8": "onnx.int8_dynamic"}
GEMM_OPS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::linear", "aten::matmul", "onnx::MatMul", "onnx::Gemm")
LAYERS_SHOWN = 3


def faster_units(machine: Machine, linear_share: float) -> dict[str, float]:
    """Speed-up over fp32 per faster dtype this device has; int8 only for the Linear share."""
    fp32 = machine.peak_gflops or machine.peak_gflops_by_dtype.get("fp32") or 0.0
    if fp32 <= 0:
        return {}
    units = {}
    for name, peak in machine.peak_gflops_by_dtype.items():
        if name == "fp32" or peak < FASTER_UNIT_MIN_SPEEDUP * fp32:
            continue
        if name == "int8" and linear_share <= 0:
            continue
        units[name] = min(peak / fp32, MAX_PREDICTED_SPEEDUP)
    return units


@ANALYZERS.register("compute_bound")
def analyze(data: ProfileData, machine: Machine) -> list[Finding]:
    cost = data.ops
    if not isinstance(cost, CostModel) or not machine.peak_gflops or cost.call_seconds <= 0:
        return []
    split = split_roofline(cost)
    compute_share = share_of_model_time(data, split.compute_seconds)
    if compute_share < MIN_COMPUTE_SHARE or split.compute_seconds <= 0:
        return []
    compute_ops = [o for o in cost.ops if not o.memory_bound]
    linear_seconds = sum(o.seconds for o in compute_ops if o.op in GEMM_OPS)
    linear_share = linear_seconds / split.compute_seconds
    cures = ONNX_CURES if data.mode == "onnx" else CURES
    units = {name: speedup for name, speedup in faster_units(machine, linear_share).items() if name in cures}
    savings = {
        name: (1.0 - 1.0 / speedup) * (linear_share if name == "int8" else 1.0) for name, speedup in units.items()
    }
    model_share = model_time_share(data) if data.end_to_end is not None else 1.0
    best = max(savings, key=savings.get) if savings else None
    impact = model_share * compute_share * savings[best] if best else min(model_share * compute_share, LOW_IMPACT)
    achieved_gflops = split.compute_flops / split.compute_seconds / 1e9
    layers = [g for g in cost.by_layer() if g.seconds > g.memory_bound_seconds][:LAYERS_SHOWN]
    evidence = {
        "compute_bound_share_of_model": compute_share,
        "model_time_share": model_share,
        "achieved_gflops": achieved_gflops,
        "peak_gflops": machine.peak_gflops,
        "compute_fraction": achieved_gflops / machine.peak_gflops,
        "flops_per_call": split.compute_flops,
        "ridge_flops_per_byte": machine.ridge_flops_per_byte,
        "faster_units_speedup": units,
        "layers": [
            {"name": g.name, "seconds": g.seconds, "flops": g.flops, "achieved_gflops": g.achieved_gflops}
            for g in layers
        ],
    }
    summary = (
        f"compute-bound: {compute_share:.0%} of the model's time is in ops above the ridge point, "
        f"at {achieved_gflops:.0f} GFLOP/s of a {machine.peak_gflops:.0f} GFLOP/s fp32 peak"
    )
    if best:
        summary += (
            f"; this device runs {best} GEMMs {units[best]:.1f}x faster, predicted to save "
            f"{impact:.0%} of end-to-end time"
        )
        recommendations = [cures[name] for name in sorted(savings, key=savings.get, reverse=True)]
    else:
        summary += "; no faster unit on this device: the model runs at the machine's limit"
        recommendations = ["batch.size"]
    return [
        Finding.from_impact(
            "compute_bound",
            share=model_share * compute_share,
            impact=impact,
            summary=summary,
            evidence=evidence,
            recommendations=recommendations,
        )
    ]
