"""repeated_inputs: the same model input comes again and again, and the model recomputes it.

Evidence: a content hash of every measured model-ready sample (accel.core.hashing.content_hash: tensor
bytes, shape and dtype); the repeat fraction is 1 - distinct / total.

Prediction: a per-sample result cache ("cache.results") skips the model for every repeat, so the
saving is the model's share of end-to-end time times the repeat fraction (hashing costs microseconds
and is ignored). The finding's share is the model time spent on repeats, less the padding part of
it that the padding finding already counts, so shares never count the same time twice.
"""

from __future__ import annotations

from accel.core.machine import Machine
from accel.profiling.analyzers import Role, register
from accel.profiling.data import ProfileData, model_time_share
from accel.profiling.report import Finding

# With fewer samples a repeat fraction says little about the stream.
MIN_SAMPLES = 4
# A per-sample result cache serves every repeat without the model.
CURE = "cache.results"


def _padding_share(data: ProfileData) -> float:
    padded = sum(p.padded_elements for p in data.padding)
    return 1.0 - sum(p.real_elements for p in data.padding) / padded if padded else 0.0


@register("repeated_inputs", Role.CAUSE, reads=("sample_hashes", "padding", "end_to_end", "stages"), recommends=(CURE,))
def analyze(data: ProfileData, machine: Machine) -> list[Finding]:
    hashes = data.sample_hashes
    if len(hashes) < MIN_SAMPLES:
        return []
    distinct = len(set(hashes))
    repeats = len(hashes) - distinct
    if repeats == 0:
        return []
    repeat_fraction = repeats / len(hashes)
    model_share = model_time_share(data)
    share = model_share * repeat_fraction * (1.0 - _padding_share(data))
    impact = model_share * repeat_fraction
    counts: dict[str, int] = {}
    for h in hashes:
        counts[h] = counts.get(h, 0) + 1
    evidence = {
        "samples_hashed": len(hashes),
        "distinct_inputs": distinct,
        "repeat_fraction": repeat_fraction,
        "most_repeated_count": max(counts.values()),
        "model_time_share": model_share,
        "predicted_saving": {CURE: impact},
        "prediction": "a per-sample result cache skips the model on every exact repeat",
    }
    summary = (
        f"{repeat_fraction:.0%} of {len(hashes)} model inputs are exact repeats ({distinct} distinct, "
        f"the most frequent seen {evidence['most_repeated_count']} times); the model takes "
        f"{model_share:.0%} of end-to-end time, so a result cache is predicted to save {impact:.0%}"
    )
    return [
        Finding.from_impact(
            "repeated_inputs",
            share=share,
            impact=impact,
            summary=summary,
            evidence=evidence,
            recommendations=[CURE],
        )
    ]
