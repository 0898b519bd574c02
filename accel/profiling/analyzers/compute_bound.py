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

from accel.core.machine import Machine
from accel.profiling.analyzers import ANALYZERS
from accel.profiling.costmodel import FASTER_UNIT_MIN_SPEEDUP
from accel.profiling.data import ProfileData, model_time_share, roofline_share, share_of_model_time
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


@ANALYZERS.register("compute_bound")
def analyze(data: ProfileData, machine: Machine) -> list[Finding]:
    found = roofline_share(data, "compute", machine.peak_gflops, MIN_COMPUTE_SHARE)
    if found is None:
        return []
    cost, split, compute_share, peak_gflops = found.cost, found.split, found.share, found.peak
    compute_ops = [o for o in cost.ops if not o.memory_bound]
    linear_seconds = sum(o.seconds for o in compute_ops if o.op in GEMM_OPS)
    linear_share = linear_seconds / split.compute_seconds
    cures = ONNX_CURES if data.mode == "onnx" else CURES
    peak_ratios = {name: ratio for name, ratio in faster_units(machine, linear_share).items() if name in cures}
    fp32_peak = machine.peak_gflops or machine.peak_gflops_by_dtype.get("fp32") or 0.0
    raw_ratios = {
        name: peak / fp32_peak for name, peak in machine.peak_gflops_by_dtype.items() if fp32_peak and name != "fp32"
    }
    measured = measured_speedups(data)
    # A measured dtype replaces its peak ratio; the peak ratio stays only for what was not timed.
    units = {name: ratio for name, ratio in peak_ratios.items() if name not in measured}
    units.update({name: ratio for name, ratio in measured.items() if name in cures and ratio >= MIN_MEASURED_SPEEDUP})
    # Savings as shares of the model's time. A measured speed-up is of the whole call (casts,
    # quantization, the ops no faster unit helps, all included); a calibrated peak applies to the
    # compute-bound time only, and int8's to its Linear share of it.
    call_share = share_of_model_time(data, cost.call_seconds)
    savings = {
        name: (1.0 - 1.0 / speedup)
        * (call_share if name in measured else compute_share * (linear_share if name == "int8" else 1.0))
        for name, speedup in units.items()
    }
    model_share = model_time_share(data) if data.end_to_end is not None else 1.0
    best = max(savings, key=lambda name: savings[name]) if savings else None
    impact = model_share * savings[best] if best else min(model_share * compute_share, LOW_IMPACT)
    achieved_gflops = split.compute_flops / split.compute_seconds / 1e9
    layers = [g for g in cost.by_layer() if g.seconds > g.memory_bound_seconds][:LAYERS_SHOWN]
    evidence = {
        "compute_bound_share_of_model": compute_share,
        "model_time_share": model_share,
        "achieved_gflops": achieved_gflops,
        "peak_gflops": peak_gflops,
        "compute_fraction": achieved_gflops / peak_gflops,
        "flops_per_call": split.compute_flops,
        "ridge_flops_per_byte": machine.ridge_flops_per_byte,
        "faster_units_speedup": units,
        "measured_layer_speedup": measured,
        "calibrated_peak_ratio": raw_ratios,
        "prediction": {
            name: "the model's call timed in this dtype (interleaved with fp32)"
            if name in measured
            else "calibrated GEMM peak ratio"
            for name in units
        },
        "predicted_saving": {cures[name]: model_share * saving for name, saving in savings.items()},
        "layers": [
            {"name": g.name, "seconds": g.seconds, "flops": g.flops, "achieved_gflops": g.achieved_gflops}
            for g in layers
        ],
    }
    summary = (
        f"compute-bound: {compute_share:.0%} of the model's time is in ops above the ridge point, "
        f"at {achieved_gflops:.0f} GFLOP/s of a {peak_gflops:.0f} GFLOP/s fp32 peak"
    )
    slower = [name for name, ratio in measured.items() if ratio < MIN_MEASURED_SPEEDUP]
    if best:
        how = (
            f"this model's call ran {units[best]:.1f}x faster in {best} at its own shapes"
            + (f" (the GEMM peak ratio says {raw_ratios[best]:.1f}x)" if best in raw_ratios else "")
            if best in measured
            else f"this device runs {best} GEMMs {units[best]:.1f}x faster (calibrated peak)"
        )
        summary += f"; {how}, predicted to save {impact:.0%} of end-to-end time"
        recommendations = [cures[name] for name in sorted(savings, key=lambda name: -savings[name])]
    else:
        summary += "; no faster unit on this device: the model runs at the machine's limit"
        recommendations = ["batch.size"]
    if slower:
        summary += "; measured at this model's shapes, " + ", ".join(
            f"{name} runs it only {measured[name]:.2f}x as fast as fp32" for name in slower
        )
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
