"""memory_peak: where a forward pass's peak memory comes from, and whether patches would cut it.

The memory pass measured the peak tensor memory of one model call and, for every leaf layer in
execution order, the bytes of its input and output; on those it planned patch-based inference
(accel.profiling.patch_plan, the planner `patch.inference` uses): the longest spatially local
prefix of the model's Sequential stage, each split point and grid the optimizer would try, and each
one's predicted peak. The best candidate's predicted peak against the planner's estimate for the
unpatched model is the predicted reduction, applied to the measured peak. A peak near the device's
memory is named whatever its shape.
"""

from __future__ import annotations

from typing import Any

from accel.core.machine import Machine
from accel.profiling.analyzers import Role, register
from accel.profiling.data import MemoryProfile, PatchCandidatePlan, PatchPlan, ProfileData
from accel.profiling.report import HIGH_IMPACT, LOW_IMPACT, MEDIUM_IMPACT, Finding

# Named when patches would cut the activation peak at least this much (MCUNetV2 reports 4-8x on
# such models; below 2x the halos' extra compute is rarely worth it).
MIN_PREDICTED_REDUCTION = 2.0
# A peak above this fraction of the device's memory risks running out under any other load.
NEAR_DEVICE_MEMORY = 0.8
LAYERS_SHOWN = 5
# Patch-based inference of the leading layers cuts the activation peak.
CURE = "patch.inference"


@register("memory_peak", Role.OTHER, reads=("memory",), recommends=(CURE,))
def analyze(data: ProfileData, machine: Machine) -> list[Finding]:
    memory = data.memory
    if not isinstance(memory, MemoryProfile) or not memory.layers:
        return []
    plan = memory.patch_plan
    best = plan.best if plan is not None else None
    reduction = plan.reduction(best) if plan is not None and best is not None else 1.0
    device_share = memory.peak_bytes / memory.device_memory_bytes if memory.device_memory_bytes else 0.0
    near_limit = device_share >= NEAR_DEVICE_MEMORY
    if reduction < MIN_PREDICTED_REDUCTION and not near_limit:
        return []
    stage_bytes, later_bytes = _working_bytes(memory, plan, best)
    predicted_peak_bytes = int(memory.peak_bytes / reduction)
    evidence: dict[str, Any] = {
        "peak_bytes": memory.peak_bytes,
        "parameter_bytes": memory.parameter_bytes,
        "device_memory_bytes": memory.device_memory_bytes,
        "device_memory_share": device_share,
        "predicted_reduction": reduction,
        "predicted_peak_bytes": predicted_peak_bytes,
        "leading_working_bytes": stage_bytes,
        "later_working_bytes": later_bytes,
        "patch_plan": plan.to_dict() if plan is not None else None,
        "no_patch_plan_reason": memory.no_patch_plan_reason,
        "layers": [
            {"name": layer.name, "input_bytes": layer.input_bytes, "output_bytes": layer.output_bytes}
            for layer in sorted(memory.layers, key=lambda layer: -layer.working_bytes)[:LAYERS_SHOWN]
        ],
        "prediction": "the planner patch.inference uses; peaks estimated from each layer's input and output bytes",
        # The cure is for memory: it saves no time (its halos cost some).
        "predicted_saving": {},
        "predicted_peak_ratio": {CURE: 1.0 / reduction},
    }
    summary = f"peak memory {memory.peak_bytes / 2**20:.1f} MiB per forward"
    if plan is not None and best is not None and reduction >= MIN_PREDICTED_REDUCTION:
        evidence.update(
            {
                "leading_layers": best.prefix_layers,
                "grid": best.grid,
                "local_layers": plan.local_layers,
                "stage_layers": plan.stage_layers,
                "halo_extra_compute_share": best.halo_extra_compute_share,
            }
        )
        summary += _patch_summary(plan, best, (stage_bytes, later_bytes), reduction, predicted_peak_bytes)
    if near_limit:
        summary += f"; the peak is {device_share:.0%} of the device's memory"
    return [
        Finding.from_impact(
            "memory_peak",
            share=min(stage_bytes / max(memory.peak_bytes, stage_bytes, 1), 1.0),
            impact=_impact(device_share),
            summary=summary,
            evidence=evidence,
            recommendations=[CURE] if reduction >= MIN_PREDICTED_REDUCTION else [],
        )
    ]


def _working_bytes(memory: MemoryProfile, plan: PatchPlan | None, best: PatchCandidatePlan | None) -> tuple[int, int]:
    """The largest working bytes of a layer in the patched leading stage, and of a layer after it."""
    if plan is None or best is None:
        return 0, 0
    end = plan.first_layer + best.prefix_layers
    stage = memory.layers[plan.first_layer : end]
    stage_bytes = max((layer.working_bytes for layer in stage), default=0)
    later_bytes = max((layer.working_bytes for layer in memory.layers[end:]) if stage else (), default=0)
    return stage_bytes, later_bytes


def _patch_summary(
    plan: PatchPlan,
    best: PatchCandidatePlan,
    working_bytes: tuple[int, int],
    reduction: float,
    predicted_peak_bytes: int,
) -> str:
    stage_bytes, later_bytes = working_bytes
    where = f"{plan.module}'s" if plan.module else "the model's"
    return (
        f"; the first {best.prefix_layers} of {where} {plan.stage_layers} layers need "
        f"{stage_bytes / 2**20:.1f} MiB of activations against {later_bytes / 2**20:.1f} MiB for all later "
        f"ones: patch-based inference of those layers ({best.grid}x{best.grid} tiles, "
        f"{best.halo_extra_compute_share:.0%} extra compute in halos) is predicted to cut the peak "
        f"{reduction:.1f}x, to {predicted_peak_bytes / 2**20:.1f} MiB"
    )


def _impact(device_share: float) -> float:
    """The finding is about memory, not time: low unless the peak threatens to run out of memory."""
    if device_share >= 1.0:
        return HIGH_IMPACT
    return MEDIUM_IMPACT if device_share >= NEAR_DEVICE_MEMORY else LOW_IMPACT
