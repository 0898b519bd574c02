"""compute_bound: the model's time goes to ops above the ridge point, limited by arithmetic units.

A faster dtype helps only as much as the model's own layers run faster in it. Where calibration
says a dtype's GEMM peak is well above fp32's (accel.profiling.costmodel.faster_dtypes), the
dtype pass ran the model as that dtype's cure runs it (cast whole to bf16/fp16, Linear layers
quantized for int8) and profiled the same call, interleaved with fp32 (accel.profiling.hardware):
the same call timed on the model as it is and as the cure runs it gives the measured speed-up at the
model's real shapes, conversions and ops no faster unit helps included. A padded conv stream whose
convolutions gain 1.3x in bf16 is predicted 1.3x, not the 4.8x a square GEMM calibrates at.
Impact: the call's share of model time x (1 - 1/measured speed-up) of the best dtype. Where nothing was timed (an ONNX
model, a dtype the model cannot run in, a pass that failed), the calibrated peak ratio is the fallback,
capped at MAX_PREDICTED_SPEEDUP, and the evidence says which prediction was used. With no faster
unit, the model runs at the machine's limit: the finding stays low.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from accel.core.machine import Machine
from accel.profiling.analyzers import Role, register
from accel.profiling.costmodel import FASTER_UNIT_MIN_SPEEDUP
from accel.profiling.data import ProfileData, RooflineShare, model_time_share, roofline_share, share_of_model_time
from accel.profiling.report import LOW_IMPACT, Finding

MIN_COMPUTE_SHARE = 0.5
# Calibration peaks are for one plain GEMM; a whole model gains less (conversions, non-GEMM ops),
# so a speed-up predicted from them is capped here.
MAX_PREDICTED_SPEEDUP = 4.0
# A dtype whose call measured less than this much faster than fp32 is no cure: run-to-run noise on
# a shared machine reaches 10%, and precision.* applies only from the same 1.2x.
MIN_MEASURED_SPEEDUP = 1.2
# Which optimizer turns the model to each dtype; int8 dynamic quantization covers Linear layers.
CURES = {"bf16": "precision.bf16", "fp16": "precision.fp16", "int8": "quantize.int8_dynamic"}
# An ONNX model is cured inside ONNX Runtime: int8 dynamic quantization of its MatMuls only.
ONNX_CURES = {"int8": "onnx.int8_dynamic"}
# With no faster unit the model runs at the machine's limit: more samples per call is what is left.
NO_FASTER_UNIT_CURE = "batch.size"
GEMM_OPS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::linear", "aten::matmul", "onnx::MatMul", "onnx::Gemm")
LAYERS_SHOWN = 3


def faster_units(machine: Machine, linear_share: float) -> dict[str, float]:
    """Calibrated GEMM peak ratio over fp32 per faster dtype; int8 only for the Linear share."""
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


def measured_speedups(data: ProfileData) -> dict[str, float]:
    """Per timed dtype, the fp32 call's seconds over that dtype's (interleaved, same call)."""
    timings = {t.dtype: t.call_seconds for t in data.dtype_timings}
    fp32 = timings.pop("fp32", 0.0)
    return {name: fp32 / seconds for name, seconds in timings.items() if fp32 > 0 and seconds > 0}


@dataclasses.dataclass(frozen=True)
class DtypeSpeedups:
    """Per faster dtype, the speed-up predicted for the model's compute and where it comes from."""

    # The prediction used: the measured call where the dtype was timed, else the capped peak ratio.
    units: dict[str, float]
    # The model's call timed in each dtype against fp32 (interleaved, same call).
    measured: dict[str, float]
    # The calibrated GEMM peak ratio over fp32, uncapped.
    raw_ratios: dict[str, float]
    # The share of the compute-bound time in GEMMs (Linear layers), which int8 covers.
    linear_share: float

    def saving(self, name: str, call_share: float, compute_share: float) -> float:
        """A dtype's saving as a share of the model's time. A measured speed-up is of the whole call
        (casts, quantization, the ops no faster unit helps, all included); a calibrated peak applies
        to the compute-bound time only, and int8's to its Linear share of it."""
        if name in self.measured:
            part = call_share
        else:
            part = compute_share * (self.linear_share if name == "int8" else 1.0)
        return (1.0 - 1.0 / self.units[name]) * part


def calibrated_peak_ratios(machine: Machine) -> dict[str, float]:
    """Each dtype's calibrated GEMM peak over fp32's, uncapped."""
    fp32_peak = machine.peak_gflops or machine.peak_gflops_by_dtype.get("fp32") or 0.0
    return {
        name: peak / fp32_peak for name, peak in machine.peak_gflops_by_dtype.items() if fp32_peak and name != "fp32"
    }


def dtype_speedups(data: ProfileData, machine: Machine, found: RooflineShare, cures: dict[str, str]) -> DtypeSpeedups:
    compute_ops = [o for o in found.cost.ops if not o.memory_bound]
    linear_seconds = sum(o.seconds for o in compute_ops if o.op in GEMM_OPS)
    linear_share = linear_seconds / found.split.compute_seconds
    peak_ratios = {name: ratio for name, ratio in faster_units(machine, linear_share).items() if name in cures}
    raw_ratios = calibrated_peak_ratios(machine)
    measured = measured_speedups(data)
    # A measured dtype replaces its peak ratio; the peak ratio stays only for what was not timed.
    units = {name: ratio for name, ratio in peak_ratios.items() if name not in measured}
    units.update({name: ratio for name, ratio in measured.items() if name in cures and ratio >= MIN_MEASURED_SPEEDUP})
    return DtypeSpeedups(units=units, measured=measured, raw_ratios=raw_ratios, linear_share=linear_share)


@register(
    "compute_bound",
    Role.OP_CLASS,
    reads=("ops", "dtype_timings", "generation", "end_to_end", "stages"),
    recommends=(*CURES.values(), *ONNX_CURES.values(), NO_FASTER_UNIT_CURE),
)
def analyze(data: ProfileData, machine: Machine) -> list[Finding]:
    found = roofline_share(data, "compute", machine.peak_gflops, MIN_COMPUTE_SHARE)
    if found is None:
        return []
    cures = ONNX_CURES if data.mode == "onnx" else CURES
    speedups = dtype_speedups(data, machine, found, cures)
    call_share = share_of_model_time(data, found.cost.call_seconds)
    savings = {name: speedups.saving(name, call_share, found.share) for name in speedups.units}
    model_share = model_time_share(data) if data.end_to_end is not None else 1.0
    best = max(savings, key=lambda name: savings[name]) if savings else None
    impact = model_share * savings[best] if best else min(model_share * found.share, LOW_IMPACT)
    predicted = {cures[name]: model_share * saving for name, saving in savings.items()}
    evidence = _evidence(found, machine, speedups, model_share, predicted)
    summary = _summary(found, evidence["achieved_gflops"], speedups, best, impact)
    if best:
        recommendations = [cures[name] for name in sorted(savings, key=lambda name: -savings[name])]
    else:
        recommendations = [NO_FASTER_UNIT_CURE]
    return [
        Finding.from_impact(
            "compute_bound",
            share=model_share * found.share,
            impact=impact,
            summary=summary,
            evidence=evidence,
            recommendations=recommendations,
        )
    ]


def _evidence(
    found: RooflineShare, machine: Machine, speedups: DtypeSpeedups, model_share: float, predicted: dict[str, float]
) -> dict[str, Any]:
    split = found.split
    achieved_gflops = split.compute_flops / split.compute_seconds / 1e9
    layers = [g for g in found.cost.by_layer() if g.seconds > g.memory_bound_seconds][:LAYERS_SHOWN]
    return {
        "compute_bound_share_of_model": found.share,
        "model_time_share": model_share,
        "achieved_gflops": achieved_gflops,
        "peak_gflops": found.peak,
        "compute_fraction": achieved_gflops / found.peak,
        "flops_per_call": split.compute_flops,
        "ridge_flops_per_byte": machine.ridge_flops_per_byte,
        "faster_units_speedup": speedups.units,
        "measured_layer_speedup": speedups.measured,
        "calibrated_peak_ratio": speedups.raw_ratios,
        "prediction": {
            name: "the model's call timed in this dtype (interleaved with fp32)"
            if name in speedups.measured
            else "calibrated GEMM peak ratio"
            for name in speedups.units
        },
        "predicted_saving": predicted,
        "layers": [
            {"name": g.name, "seconds": g.seconds, "flops": g.flops, "achieved_gflops": g.achieved_gflops}
            for g in layers
        ],
    }


def _summary(
    found: RooflineShare, achieved_gflops: float, speedups: DtypeSpeedups, best: str | None, impact: float
) -> str:
    summary = (
        f"compute-bound: {found.share:.0%} of the model's time is in ops above the ridge point, "
        f"at {achieved_gflops:.0f} GFLOP/s of a {found.peak:.0f} GFLOP/s fp32 peak"
    )
    if best:
        summary += f"; {_why_faster(speedups, best)}, predicted to save {impact:.0%} of end-to-end time"
    else:
        summary += "; no faster unit on this device: the model runs at the machine's limit"
    measured = speedups.measured
    slower = [name for name, ratio in measured.items() if ratio < MIN_MEASURED_SPEEDUP]
    if slower:
        summary += "; measured at this model's shapes, " + ", ".join(
            f"{name} runs it only {measured[name]:.2f}x as fast as fp32" for name in slower
        )
    return summary


def _why_faster(speedups: DtypeSpeedups, best: str) -> str:
    """Where the best dtype's predicted speed-up comes from, in words."""
    speedup = speedups.units[best]
    if best not in speedups.measured:
        return f"this device runs {best} GEMMs {speedup:.1f}x faster (calibrated peak)"
    said = speedups.raw_ratios.get(best)
    return f"this model's call ran {speedup:.1f}x faster in {best} at its own shapes" + (
        f" (the GEMM peak ratio says {said:.1f}x)" if said is not None else ""
    )
