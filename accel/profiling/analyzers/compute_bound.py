"""compute_bound: the model's time goes to ops above the ridge point, limited by arithmetic units.

A faster dtype helps only as much as the model's own layers run faster in it. Where calibration
timed a dtype's cure kernel faster than fp32's (accel.profiling.cure_units.faster_dtypes: fbgemm's
int8 Linear, a bf16 Linear...), the dtype pass ran the model as that dtype's cure runs it (cast
whole to bf16/fp16, Linear layers quantized for int8) interleaved with fp32
(accel.profiling.dtype_pass): the same call timed on the model as it is and as the cure runs it
gives the measured speed-up at the model's real shapes. Impact: the call's share of model time x
(1 - 1/measured speed-up) of the best dtype. Where nothing was timed (an ONNX model, a dtype the
model cannot run in, a pass cut by the budget), the calibrated kernel ratio is the fallback
(the square-GEMM peak ratio on an older calibration), capped at MAX_PREDICTED_SPEEDUP, and the
evidence says which prediction was used.

Headroom: the model "runs at the machine's limit" only when its compute-bound ops achieve
AT_LIMIT_FRACTION of the fastest unit a cure can use (cure_units.fastest_unit). Otherwise the
finding names the layers and ops holding the time, their achieved GFLOP/s and their roof, and
where the gap is. When that claim would rest on a noisy calibration, on op and call times that
disagree (CostModel.timing_disagreement), or on a rate above the calibrated peak, the finding is
"too noisy to decide" (severity info) instead.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from accel.core.cure_kernels import BASELINE_KERNEL, KERNELS
from accel.core.machine import Machine
from accel.profiling.analyzers import Role, register
from accel.profiling.costmodel import MIN_CPU_SHARE, CostGroup
from accel.profiling.cure_units import CURE_MIN_SPEEDUP, EAGER_CURES, dtype_kernel_speedups, faster_dtypes, fastest_unit
from accel.profiling.data import ProfileData, RooflineShare, model_time_share, roofline_share, share_of_model_time
from accel.profiling.report import LOW_IMPACT, Finding

MIN_COMPUTE_SHARE = 0.5
# Calibration peaks are for one plain GEMM; a whole model gains less (conversions, non-GEMM ops),
# so a speed-up predicted from them is capped here.
MAX_PREDICTED_SPEEDUP = 4.0
# A dtype whose call measured less than this much faster than fp32 is no cure: run-to-run noise on
# a shared machine reaches 10%, and precision.* applies only from the same 1.2x.
MIN_MEASURED_SPEEDUP = 1.2
# A whole call measured faster in a dtype than this many times its cure kernel's calibrated ratio is
# not believed beyond it: the model's other ops only dilute a kernel's gain, so more means a burst
# of other load fell on the fp32 calls (once measured 16x for int8 under load).
MEASURED_OVER_CALIBRATED = 1.5
# Which optimizer turns the model to each dtype; int8 dynamic quantization covers Linear layers.
CURES = EAGER_CURES
# An ONNX model is cured inside ONNX Runtime: int8 dynamic quantization of its MatMuls only.
ONNX_CURES = {"int8": "onnx.int8_dynamic"}
# OpenVINO's int8 is predicted from ONNX Runtime's int8 kernel: calibration does not load OpenVINO
# in accel's process (loaded there, a later fresh-process trial crashed natively), and unpredicted it
# ranked behind every predicted candidate (BERT-base batch 16: skipped at 292 s, where NNCF int8 by
# hand is 1.4x ORT's).
PROXY_INT8_CURE = "openvino.int8"
# ...only on a CPU class with int8 dot-product units (VNNI, AMX): without them OpenVINO's int8 ran
# BERT-base no faster than its float32 (an AVX2-only Zen 3: 3.86x against 3.91x over eager; AVX2
# emulated on a Zen 4: 1.25x against 1.34x) while ORT's int8 kernel stayed fast (8.16x; 3.80x).
PROXY_INT8_CLASSES = ("amx", "avx512_bf16", "avx512_vnni")
# With no faster unit the model runs at the machine's limit: more samples per call is what is left.
NO_FASTER_UNIT_CURE = "batch.size"
GEMM_OPS = ("aten::addmm", "aten::mm", "aten::bmm", "aten::linear", "aten::matmul", "onnx::MatMul", "onnx::Gemm")
LAYERS_SHOWN = 3
# "At the machine's limit" needs the achieved rate at this fraction of the fastest unit a cure can
# use or more: a tuned GEMM library reaches 70-90% of its peak on Linear-sized shapes, so below it
# the time is lost in the ops themselves (shapes, layout, threads), not in the unit.
AT_LIMIT_FRACTION = 0.7
# Up to this factor above the calibrated peak (a calibration taken under load reads low) the finding
# stands and says the peak is suspect; beyond it, "too noisy to decide".
SUSPECT_OVER_PEAK = 1.2


def faster_units(machine: Machine, linear_share: float, cures: dict[str, str]) -> dict[str, float]:
    """Calibrated speed-up over fp32 per faster dtype (its cure's kernel's, or its GEMM peak's on an
    older calibration), capped at MAX_PREDICTED_SPEEDUP; int8 only for the Linear share."""
    ratios = dtype_kernel_speedups(machine, cures)
    return {
        name: min(ratios[name][0], MAX_PREDICTED_SPEEDUP)
        for name in faster_dtypes(machine, cures)
        if name != "int8" or linear_share > 0
    }


def measured_speedups(data: ProfileData) -> dict[str, float]:
    """Per timed dtype, the fp32 call's seconds over that dtype's (interleaved, same call); none
    where the rounds' threads ran less than MIN_CPU_SHARE of their runnable time (the medians are
    then intra-op threads waiting for a core, and the calibrated ratio stands in)."""
    if any(t.cpu_share is not None and t.cpu_share < MIN_CPU_SHARE for t in data.dtype_timings):
        return {}
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


def runtime_cure_savings(machine: Machine, speedups: DtypeSpeedups, compute_share: float) -> dict[str, float]:
    """Savings predicted for the cures that run the Linear GEMMs in another runtime (ONNX Runtime's
    MLAS fp32 and int8 kernels, onnx.runtime / onnx.int8_dynamic), from their calibrated kernel ratio
    over eager fp32 (capped at MAX_PREDICTED_SPEEDUP), on the Linear share of the compute-bound time.
    Calibrated, never measured on this model: they rank the optimize search's candidates (a BERT
    whose fastest unit is ORT's int8 MatMul had ORT skipped for budget), not the finding's severity."""
    baseline = machine.cure_gflops.get(BASELINE_KERNEL)
    found: dict[str, float] = {}
    for name, rate in machine.cure_gflops.items():
        kernel = KERNELS.get(name)
        if kernel is None or not kernel.cure or kernel.cure in CURES.values() or not baseline or rate <= 0:
            continue
        ratio = min(rate / baseline, MAX_PREDICTED_SPEEDUP)
        if ratio >= CURE_MIN_SPEEDUP:
            saving = (1.0 - 1.0 / ratio) * compute_share * speedups.linear_share
            found[kernel.cure] = max(found.get(kernel.cure, 0.0), saving)
    return found


def calibrated_peak_ratios(machine: Machine, cures: dict[str, str]) -> dict[str, float]:
    """Each cure dtype's calibrated ratio over fp32 (its cure's kernel's, else its GEMM peak's), uncapped."""
    return {name: ratio for name, (ratio, _) in dtype_kernel_speedups(machine, cures).items()}


def dtype_speedups(data: ProfileData, machine: Machine, found: RooflineShare, cures: dict[str, str]) -> DtypeSpeedups:
    compute_ops = [o for o in found.cost.ops if not o.memory_bound]
    linear_seconds = sum(o.seconds for o in compute_ops if o.op in GEMM_OPS)
    linear_share = linear_seconds / found.split.compute_seconds
    peak_ratios = {name: ratio for name, ratio in faster_units(machine, linear_share, cures).items() if name in cures}
    raw_ratios = calibrated_peak_ratios(machine, cures)
    measured = measured_speedups(data)
    # A measured dtype replaces its calibrated ratio, which stays only for what was not timed; a
    # whole call cannot run much faster than the cure's own kernel did, so a measurement beyond
    # that (a burst of load on the fp32 side) is held to it.
    units = {name: ratio for name, ratio in peak_ratios.items() if name not in measured}
    for name, ratio in measured.items():
        if name in cures and ratio >= MIN_MEASURED_SPEEDUP:
            units[name] = min(ratio, MEASURED_OVER_CALIBRATED * max(raw_ratios.get(name, 1.0), 1.0))
    return DtypeSpeedups(units=units, measured=measured, raw_ratios=raw_ratios, linear_share=linear_share)


@dataclasses.dataclass(frozen=True)
class Headroom:
    """How far the compute-bound ops are from the fastest unit a cure can use, and whether the
    measurements can say so."""

    achieved_gflops: float
    fastest_gflops: float
    fastest_unit: str
    noise: str | None  # why at-the-limit cannot be decided, or None

    @property
    def fraction(self) -> float:
        return self.achieved_gflops / self.fastest_gflops if self.fastest_gflops > 0 else 0.0

    @property
    def at_limit(self) -> bool:
        return self.noise is None and self.fraction >= AT_LIMIT_FRACTION


def headroom(found: RooflineShare, machine: Machine) -> Headroom:
    split = found.split
    achieved = split.compute_flops / split.compute_seconds / 1e9
    fastest, unit = fastest_unit(machine)
    fastest = fastest or found.peak
    noise = None
    if machine.calibration_noisy:
        noise = "the machine's calibration was noisy (accel calibrate on a quieter machine measures it again)"
    elif found.cost.timing_disagreement:
        noise = f"op and call times disagree: {found.cost.timing_disagreement}"
    elif achieved > SUSPECT_OVER_PEAK * max(found.peak, fastest):
        noise = (
            f"the ops ran at {achieved:.0f} GFLOP/s, above the calibrated {max(found.peak, fastest):.0f} "
            f"GFLOP/s: the peak measurement is suspect (accel calibrate measures it again)"
        )
    return Headroom(achieved, fastest, unit or "fp32 GEMM peak", noise)


@register(
    "compute_bound",
    Role.OP_CLASS,
    reads=("ops", "dtype_timings", "generation", "end_to_end", "stages"),
    recommends=(*CURES.values(), *ONNX_CURES.values(), "onnx.runtime", PROXY_INT8_CURE, NO_FASTER_UNIT_CURE),
)
def analyze(data: ProfileData, machine: Machine) -> list[Finding]:
    found = roofline_share(data, "compute", machine.peak_gflops, MIN_COMPUTE_SHARE)
    if found is None:
        return []
    if found.share < MIN_COMPUTE_SHARE:  # only when the op and call times disagree (roofline_share)
        summary = (
            f"compute-bound ops hold {found.share:.0%} of the model's time by this profile, but it is too "
            f"noisy to decide: {found.cost.timing_disagreement}"
        )
        evidence = {"compute_bound_share_of_model": found.share, "too_noisy": found.cost.timing_disagreement}
        return [Finding("compute_bound", "info", min(max(found.share, 0.0), 1.0), 0.0, summary, evidence, [])]
    cures = ONNX_CURES if data.mode == "onnx" else CURES
    speedups = dtype_speedups(data, machine, found, cures)
    call_share = share_of_model_time(data, found.cost.call_seconds)
    savings = {name: speedups.saving(name, call_share, found.share) for name in speedups.units}
    model_share = model_time_share(data) if data.end_to_end is not None else 1.0
    best = max(savings, key=lambda name: savings[name]) if savings else None
    room = headroom(found, machine)
    predicted = {cures[name]: model_share * saving for name, saving in savings.items()}
    if data.mode != "onnx":  # a noisy calibration's ratio still ranks candidates better than none
        others = runtime_cure_savings(machine, speedups, found.share)
        if ONNX_CURES["int8"] in others and machine.cpu_class in PROXY_INT8_CLASSES:
            others.setdefault(PROXY_INT8_CURE, others[ONNX_CURES["int8"]])
        predicted.update({cure: model_share * saving for cure, saving in others.items() if cure not in predicted})
    evidence = _evidence(found, machine, speedups, model_share, predicted, room)
    share = min(max(model_share * found.share, 0.0), 1.0)
    if best is None and room.noise is not None:
        summary = (
            f"compute-bound: {found.share:.0%} of the model's time is in ops above the ridge point; "
            f"too noisy to decide how close it is to the machine's limit: {room.noise}"
        )
        return [Finding("compute_bound", "info", share, 0.0, summary, evidence, [])]
    impact = model_share * savings[best] if best else min(model_share * found.share, LOW_IMPACT)
    summary = _summary(found, room, speedups, best, impact, evidence)
    if best:
        recommendations = [cures[name] for name in sorted(savings, key=lambda name: -savings[name])]
        recommendations += sorted((c for c in predicted if c not in recommendations), key=lambda c: -predicted[c])
    else:
        recommendations = [NO_FASTER_UNIT_CURE]
    return [
        Finding.from_impact(
            "compute_bound",
            share=share,
            impact=impact,
            summary=summary,
            evidence=evidence,
            recommendations=recommendations,
        )
    ]


def _group(group: CostGroup, call_seconds: float) -> dict[str, Any]:
    """A layer or op's share of the call, achieved GFLOP/s and roof (its FLOPs over its roofline time)."""
    return {
        "name": group.name,
        "seconds": group.seconds,
        "share": group.seconds / call_seconds if call_seconds > 0 else 0.0,
        "flops": group.flops,
        "achieved_gflops": group.achieved_gflops,
        "roof_gflops": group.flops / group.roofline_seconds / 1e9 if group.roofline_seconds > 0 else 0.0,
    }


def _evidence(
    found: RooflineShare,
    machine: Machine,
    speedups: DtypeSpeedups,
    model_share: float,
    predicted: dict[str, float],
    room: Headroom,
) -> dict[str, Any]:
    split = found.split
    call = found.cost.call_seconds
    layers = [g for g in found.cost.by_layer() if g.seconds > g.memory_bound_seconds][:LAYERS_SHOWN]
    ops = [g for g in found.cost.by_op() if g.seconds > g.memory_bound_seconds][:LAYERS_SHOWN]
    return {
        "compute_bound_share_of_model": found.share,
        "model_time_share": model_share,
        "achieved_gflops": room.achieved_gflops,
        "peak_gflops": found.peak,
        "compute_fraction": room.achieved_gflops / found.peak,
        "fastest_unit": room.fastest_unit,
        "fastest_unit_gflops": room.fastest_gflops,
        "fraction_of_fastest_unit": room.fraction,
        "at_limit": room.at_limit,
        "too_noisy": room.noise,
        "flops_per_call": split.compute_flops,
        "ridge_flops_per_byte": machine.ridge_flops_per_byte,
        "faster_units_speedup": speedups.units,
        "measured_layer_speedup": speedups.measured,
        "calibrated_peak_ratio": speedups.raw_ratios,
        "prediction": {
            name: "the model's call timed in this dtype (interleaved with fp32)"
            if name in speedups.measured
            else "calibrated cure kernel ratio"
            if machine.cure_gflops
            else "calibrated GEMM peak ratio"
            for name in speedups.units
        },
        "predicted_saving": predicted,
        "layers": [_group(g, call) for g in layers],
        "ops": [_group(g, call) for g in ops],
    }


def _summary(
    found: RooflineShare,
    room: Headroom,
    speedups: DtypeSpeedups,
    best: str | None,
    impact: float,
    evidence: dict[str, Any],
) -> str:
    summary = (
        f"compute-bound: {found.share:.0%} of the model's time is in ops above the ridge point, "
        f"at {room.achieved_gflops:.0f} GFLOP/s, {room.fraction:.0%} of the fastest unit a cure can use "
        f"({room.fastest_unit}, {room.fastest_gflops:.0f} GFLOP/s)"
    )
    if room.noise is not None:
        summary += f" (the rate is uncertain: {room.noise})"
    elif room.achieved_gflops > max(found.peak, room.fastest_gflops):
        summary += " (above the calibrated peak: the peak measurement is suspect; accel calibrate measures it again)"
    if best:
        summary += f"; {_why_faster(speedups, best)}, predicted to save {impact:.0%} of end-to-end time"
    elif room.at_limit:
        summary += "; no faster unit on this device: the model runs at the machine's limit"
    else:
        summary += "; not at the machine's limit and no faster unit: the gap is in the ops themselves"
    if not room.at_limit:
        summary += "; the time is in " + _where(evidence["layers"], evidence["ops"])
    measured = speedups.measured
    slower = [name for name, ratio in measured.items() if ratio < MIN_MEASURED_SPEEDUP]
    if slower:
        summary += "; measured at this model's shapes, " + ", ".join(
            f"{name} runs it only {measured[name]:.2f}x as fast as fp32" for name in slower
        )
    return summary


def _where(layers: list[dict[str, Any]], ops: list[dict[str, Any]]) -> str:
    """The top layers and ops in words: share of the call, achieved GFLOP/s, roof."""

    def say(group: dict[str, Any]) -> str:
        return (
            f"{group['name'] or '(model)'} {group['share']:.0%} at {group['achieved_gflops']:.0f} "
            f"of {group['roof_gflops']:.0f} GFLOP/s"
        )

    parts = [say(g) for g in layers[:2]] + [say(g) for g in ops[:1]]
    return ", ".join(parts) if parts else "no single layer"


def _why_faster(speedups: DtypeSpeedups, best: str) -> str:
    """Where the best dtype's predicted speed-up comes from, in words."""
    speedup = speedups.units[best]
    if best not in speedups.measured:
        return f"this device runs {best} {speedup:.1f}x faster than fp32 (calibrated)"
    said = speedups.raw_ratios.get(best)
    return f"this model's call ran {speedup:.1f}x faster in {best} at its own shapes" + (
        f" (the calibrated peak ratio says {said:.1f}x)" if said is not None else ""
    )
