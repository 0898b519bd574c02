"""memory_peak: where a forward pass's peak memory comes from, and whether patches would cut it.

The memory pass measured the peak tensor memory of one model call and, for every leaf layer in
execution order, the bytes of its input and output (both live while it runs). When the leading
layers (the first LEADING_FRACTION of them: high-resolution stages of a CNN) need several times the
working memory of all later layers, running those layers patch by patch (MCUNetV2's patch-based
inference) lowers the peak to the larger of the later layers' need and one patch's share of the
leading need: the predicted reduction, capped at MAX_PREDICTED_REDUCTION, the 4-8x such models see.
A peak near the device's memory is named whatever its shape.
"""

from __future__ import annotations

from accel.core.machine import Machine
from accel.profiling.analyzers import ANALYZERS
from accel.profiling.data import MemoryProfile, ProfileData
from accel.profiling.report import HIGH_IMPACT, LOW_IMPACT, MEDIUM_IMPACT, Finding

LEADING_FRACTION = 0.25
# Named when patches would cut the activation peak at least this much...
MIN_PREDICTED_REDUCTION = 2.0
# ...predicted for a 4 x 4 patch grid (MCUNetV2 uses 2x2 to 4x4), and never above what such models show.
PATCHES = 16
MAX_PREDICTED_REDUCTION = 8.0
# A peak above this fraction of the device's memory risks running out under any other load.
NEAR_DEVICE_MEMORY = 0.8
LAYERS_SHOWN = 5


@ANALYZERS.register("memory_peak")
def analyze(data: ProfileData, machine: Machine) -> list[Finding]:
    memory = data.memory
    if not isinstance(memory, MemoryProfile) or not memory.layers:
        return []
    layers = memory.layers
    leading_count = max(1, int(len(layers) * LEADING_FRACTION))
    leading = max(layer.working_bytes for layer in layers[:leading_count])
    later = max((layer.working_bytes for layer in layers[leading_count:]), default=0)
    after = max(later, leading / PATCHES)
    reduction = min(leading / after, MAX_PREDICTED_REDUCTION) if after > 0 else 1.0
    device_share = memory.peak_bytes / memory.device_memory_bytes if memory.device_memory_bytes else 0.0
    near_limit = device_share >= NEAR_DEVICE_MEMORY
    if reduction < MIN_PREDICTED_REDUCTION and not near_limit:
        return []
    largest = sorted(layers, key=lambda layer: -layer.working_bytes)[:LAYERS_SHOWN]
    leading_share = leading / max(memory.peak_bytes, leading)
    evidence = {
        "peak_bytes": memory.peak_bytes,
        "parameter_bytes": memory.parameter_bytes,
        "device_memory_bytes": memory.device_memory_bytes,
        "device_memory_share": device_share,
        "leading_layers": leading_count,
        "leading_working_bytes": leading,
        "later_working_bytes": later,
        "leading_share_of_peak": leading_share,
        "predicted_reduction": reduction,
        "predicted_peak_bytes": int(memory.peak_bytes / reduction),
        "layers": [
            {"name": layer.name, "input_bytes": layer.input_bytes, "output_bytes": layer.output_bytes}
            for layer in largest
        ],
    }
    summary = (
        f"peak memory {memory.peak_bytes / 2**20:.1f} MiB per forward; the first {leading_count} layers need "
        f"{leading / 2**20:.1f} MiB of activations against {later / 2**20:.1f} MiB for all later ones"
    )
    if reduction >= MIN_PREDICTED_REDUCTION:
        summary += f": patch-based inference of the leading layers is predicted to cut the peak {reduction:.1f}x"
    if near_limit:
        summary += f"; the peak is {device_share:.0%} of the device's memory"
    # The finding is about memory, not time: low unless the peak threatens to run out of memory.
    impact = HIGH_IMPACT if device_share >= 1.0 else MEDIUM_IMPACT if near_limit else LOW_IMPACT
    return [
        Finding.from_impact(
            "memory_peak",
            share=min(leading_share, 1.0),
            impact=impact,
            summary=summary,
            evidence=evidence,
            recommendations=["patch.inference"],
        )
    ]
