"""memory_bandwidth: the model's time goes to ops below the ridge point, streaming bytes.

An op is memory-bound when its arithmetic intensity (FLOPs per byte) is below the machine's ridge
point (peak FLOP/s over peak bandwidth, from calibration): no compute unit can make it faster,
only moving fewer bytes can. Impact: the memory-bound time times the byte reduction of the best
cure. Weight quantization to int8 removes three quarters of fp32 weight traffic (a half of bf16),
so the saving is memory-bound time x weight share of its bytes x that reduction. The weights an
embedding lookup reads (the rows it gathers) are not what int8 Linear layers shrink: their cure is
row-wise int8 tables (`quantize.embedding`). Each cure is recommended by the bytes it would cut: not
when that is under MIN_INT8_CUT of them, nor far less than the best cure would cut.

When the op times and the call time of the cost pass disagree (CostModel.timing_disagreement: other
processes took the CPU during some calls), or the ops streamed faster than the calibrated peak (the
peak measurement is suspect), the memory-bound share cannot be trusted: the finding says "too noisy
to decide" at severity info instead of a verdict.
"""

from __future__ import annotations

from typing import Any

from accel.core.counts import EMBEDDING_LOOKUP_OPS
from accel.core.dtypes import element_bytes, is_floating
from accel.core.machine import Machine
from accel.profiling.analyzers import Role, register
from accel.profiling.costmodel import CostModel, is_dispatch_bound
from accel.profiling.data import ProfileData, model_time_share, roofline_share
from accel.profiling.report import Finding

# The finding is named when memory-bound ops take at least this share of a model call: below it,
# another limit (compute, dispatch) holds most of the time.
MIN_MEMORY_SHARE = 0.5
# ...and only when those ops stream near the peak: far below it they are limited by latency or
# dispatch, not by bandwidth, and moving fewer bytes would not make them faster.
MIN_BANDWIDTH_FRACTION = 0.15
# ...except where most of those bytes are embedding rows gathered at random: a gather waits on DRAM
# for every row, far below the streaming peak (3 GB/s of 32 on the DLRM corpus recommender), yet
# fewer bytes per row are fewer cache lines waited on (int8 rows 1.80x [1.45, 2.42] there, quiet:
# `python -m benchmarks embedding`).
MIN_GATHERED_SHARE = 0.5
INT8_BYTES = 1
# Ops that read more than they write can stream faster than the calibrated copy (read + write): up
# to this factor above its peak the finding stands and says the peak is suspect; beyond it, the
# measurement cannot be trusted and the finding is "too noisy to decide".
SUSPECT_OVER_PEAK = 1.5
LAYERS_SHOWN = 3
ABOVE_PEAK_NOTE = "above the calibrated peak: its bytes or time are miscounted"
# int8 weights are recommended when they would cut at least this share of the bytes moved.
MIN_INT8_CUT = 0.05
# Fewer weight bytes: int8 weights in PyTorch or in ONNX Runtime, or ORT's 4/8-bit weight-only (an ONNX
# model only the ORT int8 one).
INT8_CURES = ("quantize.int8_dynamic", "onnx.int8_dynamic", "onnx.weight_only")
ONNX_INT8_CURES = ("onnx.int8_dynamic",)
# Fewer bytes per gathered row: embedding tables stored row-wise in int8 (a torch model only).
TABLE_CURES = ("quantize.embedding",)
# A cure that would cut less than this share of what the best one cuts is not recommended: beside
# the rows a recommender gathers from its tables, its MLP weights are not where its bytes go.
MIN_CUT_OF_BEST = 0.25
# The same weight reads for more samples, and fused ops (not for an ONNX model: its graph runtime fuses).
OTHER_CURES = ("batch.size", "compile")
ONNX_OTHER_CURES = ("batch.size",)


def ops_above_peak(cost: CostModel, peak_gbs: float, cache_bytes: int) -> list[dict[str, Any]]:
    """Memory-bound ops (by name and layer) measured streaming faster than the calibrated peak while
    moving more than the largest cache holds per call: no cache serves them, so their bytes or their
    time are miscounted. Never capped at the peak: the rate measured is the evidence."""
    moved: dict[tuple[str, str], list[float]] = {}
    for op in cost.ops:
        if op.memory_bound and op.seconds > 0 and op.bytes_moved > cache_bytes:
            totals = moved.setdefault((op.op, op.module), [0.0, 0.0])
            totals[0] += op.bytes_moved
            totals[1] += op.seconds
    above: list[dict[str, Any]] = [
        {
            "op": name,
            "layer": module,
            "bytes": int(total),
            "achieved_gbs": total / seconds / 1e9,
            "bandwidth_fraction": total / seconds / 1e9 / peak_gbs,
            "note": ABOVE_PEAK_NOTE,
        }
        for (name, module), (total, seconds) in moved.items()
        if peak_gbs > 0 and total / seconds / 1e9 > peak_gbs
    ]
    return sorted(above, key=lambda o: -o["bytes"])[:LAYERS_SHOWN]


def _suspect_clause(suspect: list[dict[str, Any]]) -> str:
    if not suspect:
        return ""
    fastest = max(o["achieved_gbs"] for o in suspect)
    return f"; {', '.join(o['op'] for o in suspect)} measured at up to {fastest:.1f} GB/s, {ABOVE_PEAK_NOTE}"


def int8_saved_bytes(cost: CostModel, lookups: bool = False) -> int:
    """Bytes per call that int8 weights would not move, in memory-bound ops (not dispatch-bound):
    of the layers' weights, or (`lookups`) of the embedding rows gathered."""
    saved = 0.0
    for op in cost.ops:
        size = element_bytes(op.dtype) if is_floating(op.dtype) else None
        chosen = (op.op in EMBEDDING_LOOKUP_OPS) == lookups
        if chosen and op.memory_bound and op.weight_bytes and size and not is_dispatch_bound(op):
            saved += op.weight_bytes * (1.0 - INT8_BYTES / size)
    return int(saved)


def table_lookups(cost: CostModel) -> dict[str, Any]:
    """The memory-bound embedding lookups of one call: their bytes, op names and tables (layers)."""
    found = [op for op in cost.ops if op.memory_bound and op.op in EMBEDDING_LOOKUP_OPS and op.weight_bytes]
    return {
        "bytes": sum(op.bytes_moved for op in found),
        "ops": sorted({op.op for op in found}),
        "tables": sorted({op.module for op in found}),
    }


def recommended_cures(cost: CostModel, memory_bytes: int, onnx: bool) -> tuple[list[str], float, str]:
    """The byte-cutting cures worth recommending (best first), the share of the bytes the best one
    would cut, and the clauses saying what each would cut."""
    if not memory_bytes:
        return [], 0.0, ""
    cuts = {"int8": int8_saved_bytes(cost) / memory_bytes}
    if not onnx:
        cuts["tables"] = int8_saved_bytes(cost, lookups=True) / memory_bytes
    best = max(cuts.values())
    worth = sorted(
        (k for k, v in cuts.items() if v >= max(MIN_INT8_CUT, MIN_CUT_OF_BEST * best)), key=lambda k: cuts[k]
    )
    worth.reverse()
    clauses = {"int8": "int8 weights would cut {:.0%} of those bytes", "tables": "int8 table rows would cut {:.0%}"}
    sentence = "".join(f"; {clauses[k].format(cuts[k])}" for k in worth)
    if cuts["int8"] > 0 and "int8" not in worth:
        floor = f"under {MIN_INT8_CUT:.0%}" if cuts["int8"] < MIN_INT8_CUT else f"{cuts['int8']:.0%}"
        sentence += f"; int8 weights would cut {floor} of those bytes, too little to recommend"
    cures = {"int8": ONNX_INT8_CURES if onnx else INT8_CURES, "tables": TABLE_CURES}
    return [name for k in worth for name in cures[k]], (best if worth else 0.0), sentence


def _tables_clause(lookups: dict[str, Any], memory_bytes: int) -> str:
    if not lookups["bytes"] or not memory_bytes:
        return ""
    shown = lookups["tables"][:LAYERS_SHOWN]
    tables = ", ".join(shown) + (", ..." if len(lookups["tables"]) > len(shown) else "")
    return (
        f"; {lookups['bytes'] / memory_bytes:.0%} of them are embedding rows gathered by "
        f"{', '.join(lookups['ops'])} ({tables})"
    )


@register(
    "memory_bandwidth",
    Role.OP_CLASS,
    reads=("ops", "generation", "end_to_end", "stages"),
    recommends=(*INT8_CURES, *TABLE_CURES, *OTHER_CURES),
)
def analyze(data: ProfileData, machine: Machine) -> list[Finding]:
    found = roofline_share(data, "memory", machine.peak_bandwidth_gbs, MIN_MEMORY_SHARE)
    if found is None:
        return []
    cost, split, memory_share, peak_bandwidth_gbs = found.cost, found.split, found.share, found.peak
    achieved_gbs = split.memory_bytes / split.memory_seconds / 1e9
    model_share = model_time_share(data) if data.end_to_end is not None else 1.0
    noise = cost.timing_disagreement
    suspect = ops_above_peak(cost, peak_bandwidth_gbs, max(machine.cache_bytes.values(), default=0))
    above_peak = (
        f"the ops streamed {achieved_gbs:.1f} GB/s, above the calibrated {peak_bandwidth_gbs:.1f} GB/s: "
        f"the peak measurement is suspect (accel calibrate measures it again)"
    )
    if noise is None and achieved_gbs > SUSPECT_OVER_PEAK * peak_bandwidth_gbs:
        noise = above_peak
    if noise is not None:
        summary = (
            f"memory-bound ops hold {memory_share:.0%} of the model's time by this profile, but it is "
            f"too noisy to decide: {noise}"
        )
        evidence = {
            "memory_bound_share_of_model": memory_share,
            "model_time_share": model_share,  # so the causes' time is not counted twice
            "achieved_gbs": achieved_gbs,
            "too_noisy": noise,
            "ops_above_peak": suspect,
        }
        share = min(max(model_share * memory_share, 0.0), 1.0)
        return [Finding("memory_bandwidth", "info", share, 0.0, summary, evidence, [])]
    lookups = table_lookups(cost)
    gathered = split.memory_bytes > 0 and lookups["bytes"] >= MIN_GATHERED_SHARE * split.memory_bytes
    if achieved_gbs < MIN_BANDWIDTH_FRACTION * peak_bandwidth_gbs and not gathered:
        return []
    weight_share = split.memory_weight_bytes / split.memory_bytes if split.memory_bytes else 0.0
    onnx = data.mode == "onnx"
    recommendations, reduction, cuts = recommended_cures(cost, split.memory_bytes, onnx)
    impact = model_share * memory_share * reduction
    layers = [g for g in cost.by_layer() if g.memory_bound_seconds > 0][:LAYERS_SHOWN]
    evidence = {
        "memory_bound_share_of_model": memory_share,
        "model_time_share": model_share,
        "achieved_gbs": achieved_gbs,
        "peak_bandwidth_gbs": peak_bandwidth_gbs,
        "bandwidth_fraction": achieved_gbs / peak_bandwidth_gbs,
        "bytes_per_call": split.memory_bytes,
        "weight_bytes_per_call": split.memory_weight_bytes,
        "activation_bytes_per_call": split.memory_bytes - split.memory_weight_bytes,
        "ridge_flops_per_byte": machine.ridge_flops_per_byte,
        "ops_above_peak": suspect,
        "embedding_lookup_bytes_per_call": lookups["bytes"],
        "embedding_lookup_ops": lookups["ops"],
        "embedding_tables": lookups["tables"],
        "layers": [
            {
                "name": g.name,
                "seconds": g.memory_bound_seconds,
                "bytes": g.bytes_moved,
                "weight_bytes": g.weight_bytes,
                "achieved_gbs": g.achieved_gbs,
                "bandwidth_fraction": g.achieved_gbs / peak_bandwidth_gbs,
            }
            for g in layers
        ],
    }
    summary = (
        f"memory-bound: {memory_share:.0%} of the model's time is in ops below the ridge point "
        f"({machine.ridge_flops_per_byte:.1f} FLOP/byte), moving {split.memory_bytes / 1e6:.1f} MB per call "
        f"({weight_share:.0%} weights) at {achieved_gbs:.1f} GB/s of a {peak_bandwidth_gbs:.1f} GB/s peak"
    )
    if achieved_gbs > peak_bandwidth_gbs:
        summary += f" ({above_peak})"
    elif gathered and achieved_gbs < MIN_BANDWIDTH_FRACTION * peak_bandwidth_gbs:
        summary += " (rows gathered at random wait on memory for each row, far below the streaming peak)"
    summary += _suspect_clause(suspect) + _tables_clause(lookups, split.memory_bytes) + cuts
    recommendations += ONNX_OTHER_CURES if onnx else OTHER_CURES
    return [
        Finding.from_impact(
            "memory_bandwidth",
            share=model_share * memory_share,
            impact=impact,
            summary=summary,
            evidence=evidence,
            recommendations=recommendations,
        )
    ]
