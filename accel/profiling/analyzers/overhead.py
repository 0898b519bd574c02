"""overhead: ops take far longer than their roofline time: dispatch, Python and framework glue.

An op whose roofline time is a few microseconds or less and that took several times that is
dispatch-bound (accel.profiling.costmodel.is_dispatch_bound); time in a model call outside any aten op
(Python in forward, module hooks) is overhead too. Impact: that time above the roofline, which a
graph runtime (ONNX Runtime, torch.compile; CUDA graphs on a GPU) or a larger batch removes most of.
In a generate loop the graph runtimes that apply are the loops run outside torch (onnx.generate,
openvino.generate): the finding predicts they save that share, which is what ranks them in the
search (without a prediction they ranked behind every torch candidate and the budget ran out
before them: GPT-2 small's generate(), 180 s).
"""

from __future__ import annotations

import statistics
from typing import Any

from accel.core.machine import Machine
from accel.profiling.analyzers import Role, register
from accel.profiling.costmodel import SHORT_OP_SECONDS, CostModel, split_roofline
from accel.profiling.data import ProfileData, model_time_share, share_of_model_time
from accel.profiling.report import Finding

# Below this share of a model call in overhead, there is nothing a graph runtime would save.
MIN_OVERHEAD_SHARE = 0.1
# A graph runtime removes dispatch and Python between ops; a larger batch spreads them over more samples.
# The generate loops in a graph runtime are the graph runtimes of a generate pipeline (only).
GENERATE_LOOPS = ("onnx.generate", "openvino.generate")
CURES = ("onnx.runtime", *GENERATE_LOOPS, "compile", "batch.size")


def cures_for(data: ProfileData) -> tuple[list[str], dict[str, str]]:
    """The cures of CURES that fit the profiled model's shape, and why each other one does not:
    each rule reads what the profile measured (its mode, a generate loop, a source, the samples'
    lengths), so an ONNX model is not sent to ONNX Runtime nor a batch of one ragged sample to a
    larger batch."""
    left_out: dict[str, str] = {}
    if data.mode == "onnx":
        left_out["onnx.runtime"] = left_out["compile"] = "the model already runs in ONNX Runtime, a graph runtime"
    if data.mode == "script":
        left_out["onnx.runtime"] = "a training script's step runs backward, which ONNX Runtime does not"
        left_out["batch.size"] = "a training script's batch size is its DataLoader's, a training choice"
    if data.generation is not None:
        left_out["onnx.runtime"] = "the model runs in a generate loop; an export covers single forward calls only"
    if data.mode == "pipeline" and data.stage("collate") is None:
        left_out["batch.size"] = "the pipeline has no source of samples, only a fixed example batch"
    lengths = sorted({n for p in data.padding if p.measured_from == "shapes" for n in p.sample_lengths})
    if data.batch_size == 1 and len(lengths) > 1:
        left_out.setdefault(
            "batch.size",
            f"its samples run one per call at {lengths[0]} to {lengths[-1]} positions: a larger batch pads "
            "them to the longest, adding work the model does not do now",
        )
    # the generate loops are the graph runtime of a generate pipeline alone, not named elsewhere
    other = () if data.generation is not None and data.mode == "pipeline" else GENERATE_LOOPS
    return [cure for cure in CURES if cure not in left_out and cure not in other], left_out


@register("overhead", Role.OP_CLASS, reads=("ops", "generation", "end_to_end", "stages", "padding"), recommends=CURES)
def analyze(data: ProfileData, machine: Machine) -> list[Finding]:
    cost = data.ops
    if not isinstance(cost, CostModel) or cost.call_seconds <= 0 or not cost.ops:
        return []
    split = split_roofline(cost)
    overhead_share = share_of_model_time(data, split.overhead_seconds)
    if overhead_share < MIN_OVERHEAD_SHARE:
        return []
    model_share = model_time_share(data) if data.end_to_end is not None else 1.0
    seconds = [o.seconds for o in cost.ops]
    short_seconds = sum(s for s in seconds if s < SHORT_OP_SECONDS)
    median_op = statistics.median(seconds)
    median_roofline = statistics.median(o.roofline_seconds for o in cost.ops)
    evidence: dict[str, Any] = {
        "overhead_share_of_model": overhead_share,
        "model_time_share": model_share,
        "op_count_per_call": len(cost.ops),
        "median_op_seconds": median_op,
        "median_op_roofline_seconds": median_roofline,
        "short_op_share": short_seconds / cost.call_seconds,
        "short_op_threshold_seconds": SHORT_OP_SECONDS,
        "outside_ops_seconds": split.outside_ops_seconds,
        "call_seconds": cost.call_seconds,
    }
    summary = (
        f"overhead-bound: {len(cost.ops)} ops per call with a median of {median_op * 1e6:.1f} us against a "
        f"roofline of {median_roofline * 1e6:.2f} us; {overhead_share:.0%} of the model's time is dispatch "
        f"and Python above the roofline"
    )
    if machine.is_cuda:
        summary += "; on a GPU, CUDA graphs (torch.compile mode='reduce-overhead') replay the launches at once"
    recommendations, left_out = cures_for(data)
    evidence["predicted_saving"] = {
        cure: model_share * overhead_share for cure in recommendations if cure in GENERATE_LOOPS
    }
    if left_out:
        evidence["cures_left_out"] = left_out
        summary += "; " + "; ".join(f"{cure} does not fit: {why}" for cure, why in left_out.items())
    return [
        Finding.from_impact(
            "overhead",
            share=model_share * overhead_share,
            impact=model_share * overhead_share,
            summary=summary,
            evidence=evidence,
            recommendations=recommendations,
        )
    ]
