"""padding: variable-length samples padded to the longest in their batch waste model work.

Evidence: for each measured batch, the elements of the collated tensor against the elements its
samples really hold (accel.profiling.stages.measure_padding). The padding share is the wasted fraction.

Prediction: bucketing by length (sort samples by length, batch neighbours together) is simulated on
the measured sample lengths with the pipeline's batch size; the model's work is taken as
proportional to the elements it is fed (linear: attention's quadratic term would make the real gain
larger), so the saving is the model's share of end-to-end time times the fraction of padded elements
bucketing removes. The finding's share is the model time spent on padding elements; it lies inside
the model's time, disjoint from the data-path wait that data_loading and input_decoding describe.
"""

from __future__ import annotations

from accel.core.machine import Machine
from accel.profiling.analyzers import Role, register
from accel.profiling.data import ProfileData, model_time_share
from accel.profiling.report import Finding

# Below this padded fraction there is nothing worth reporting (a few ragged tails).
MIN_PADDING_SHARE = 0.01
# Sorting samples by length into batches removes the padding.
CURE = "batch.bucket"


def bucketed_elements(lengths: list[int], batch_size: int, elements_per_length: float) -> float:
    """Collated elements when samples are sorted by length and neighbours are batched together.

    Batches keep their sizes (full batches and one partial batch); in sorted order, the best place
    for the partial batch is tried at every batch boundary, which gives the fewest elements any
    batching with those sizes can reach, so the prediction never exceeds arrival-order batching.
    """
    ordered = sorted(lengths)
    full, rest = divmod(len(ordered), batch_size)
    sizes = [batch_size] * full
    best = None
    for position in range(full + 1 if rest else 1):
        layout = sizes[:position] + ([rest] if rest else []) + sizes[position:]
        total, start = 0, 0
        for size in layout:
            start += size
            total += ordered[start - 1] * size
        best = total if best is None else min(best, total)
    return float(best or 0) * elements_per_length


@register("padding", Role.CAUSE, reads=("padding", "end_to_end", "stages"), recommends=(CURE,))
def analyze(data: ProfileData, machine: Machine) -> list[Finding]:
    if not data.padding:
        return []
    real = sum(p.real_elements for p in data.padding)
    padded = sum(p.padded_elements for p in data.padding)
    if padded <= 0:
        return []
    padding_share = 1.0 - real / padded
    if padding_share < MIN_PADDING_SHARE:
        return []
    lengths = [n for p in data.padding for n in p.sample_lengths]
    removed = 0.0
    bucketed = float(padded)
    if lengths and sum(lengths) > 0:
        bucketed = bucketed_elements(lengths, data.batch_size, real / sum(lengths))
        removed = max(padded - bucketed, 0.0) / padded
    model_share = model_time_share(data)
    share = model_share * padding_share
    impact = model_share * removed
    evidence = {
        "padding_share": padding_share,
        "real_elements": real,
        "padded_elements": padded,
        "batches_measured": len(data.padding),
        "batch_size": data.batch_size,
        "min_length": min(lengths) if lengths else None,
        "max_length": max(lengths) if lengths else None,
        "bucketed_padding_share": 1.0 - real / bucketed if bucketed > 0 else 0.0,
        "model_time_share": model_share,
        "predicted_saving": {CURE: impact},
        "prediction": "model work proportional to elements fed; bucketing simulated on the measured lengths",
    }
    summary = (
        f"{padding_share:.0%} of the elements the model gets are padding "
        f"(lengths {evidence['min_length']}..{evidence['max_length']}, batch size {data.batch_size}); "
        f"the model takes {model_share:.0%} of end-to-end time, so {share:.0%} goes to padding; "
        f"bucketing by length leaves {evidence['bucketed_padding_share']:.0%} padding and is predicted "
        f"to save {impact:.0%} of end-to-end time"
    )
    return [
        Finding.from_impact(
            "padding",
            share=share,
            impact=impact,
            summary=summary,
            evidence=evidence,
            recommendations=[CURE] if impact > 0 else [],
        )
    ]
