"""padding: variable-length samples padded to the longest in their batch waste model work.

Evidence: for each measured batch, the elements of the collated tensor against the elements its
samples really hold (accel.profiling.stages.measure_padding). The padding share is the wasted fraction.

Prediction: bucketing by length (sort samples by length, batch neighbours together) is simulated on
the measured sample lengths with the pipeline's batch size; the model's work is taken as
proportional to the elements it is fed (linear: attention's quadratic term would make the real gain
larger), so the saving is the model's share of end-to-end time times the fraction of padded elements
bucketing removes. The finding's share is the model time spent on padding elements; it lies inside
the model's time, disjoint from the data-path wait that data_loading and input_decoding describe.

Padding already in the samples (`tokenizer(..., padding="max_length")`: every sample as long as the
batch, the attention mask saying which positions are real) is out of bucketing's reach: it sits in
columns that are padding in every sample of a batch. Its cure cuts those columns per batch
(`batch.trim_padding`, which needs the mask), predicted the same way from the measured
`trimmable_elements`. Padding found only as pad-token runs (no mask) has no cure to recommend: a
model that is not told which positions are padding computes different outputs without them.
"""

from __future__ import annotations

from accel.core.machine import Machine
from accel.profiling.analyzers import Role, register
from accel.profiling.data import BatchPadding, ProfileData, model_time_share
from accel.profiling.report import Finding

# Below this padded fraction there is nothing worth reporting (a few ragged tails).
MIN_PADDING_SHARE = 0.01
# Sorting samples by length into batches removes the padding.
CURE = "batch.bucket"
# Cutting the columns that are padding in every sample of a batch removes padding made before batching.
TRIM_CURE = "batch.trim_padding"
MASK = "attention_mask"


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


def _bucketed(lengths: list[int], batch_size: int, real: int, padded: int) -> tuple[float, float]:
    """Elements once bucketed, and the fraction of the padded elements bucketing removes."""
    if sum(lengths) <= 0:
        return float(padded), 0.0
    bucketed = bucketed_elements(lengths, batch_size, real / sum(lengths))
    return bucketed, max(padded - bucketed, 0.0) / padded


def _cure(padding: list[BatchPadding], bucketing_removes: float) -> tuple[str | None, float]:
    """The cure for the measured padding and the fraction of the padded elements it removes."""
    padded = sum(p.padded_elements for p in padding)
    trimmable = sum(p.trimmable_elements for p in padding)
    if trimmable <= 0:
        return CURE, bucketing_removes
    # Padding made before batching: bucketing sees samples of one length; only cutting it helps,
    # and only when a mask tells the model which positions are padding.
    if any(p.measured_from == MASK for p in padding):
        return TRIM_CURE, trimmable / padded
    return None, 0.0


def _cure_clause(cure: str | None, evidence: dict, impact: float) -> str:
    if cure == CURE:
        return (
            f"bucketing by length leaves {evidence['bucketed_padding_share']:.0%} padding and is predicted "
            f"to save {impact:.0%} of end-to-end time"
        )
    clause = (
        f"{evidence['trimmable_padding_share']:.0%} of the elements sit in columns that are padding in every "
        f"sample of their batch (the samples come padded, e.g. tokenizer(padding='max_length'))"
    )
    if cure is None:
        return clause + (
            ", but the batch has no attention_mask to tell the model which positions are padding, "
            "so no cure can cut them with its outputs intact"
        )
    return clause + f": cutting them per batch is predicted to save {impact:.0%} of end-to-end time"


@register("padding", Role.CAUSE, reads=("padding", "end_to_end", "stages"), recommends=(CURE, TRIM_CURE))
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
    lengths = [n for p in data.padding for n in p.sample_lengths] or [0]
    bucketed, removed = _bucketed(lengths, data.batch_size, real, padded)
    model_share = model_time_share(data)
    share = model_share * padding_share
    cure, cut = _cure(data.padding, removed)
    impact = model_share * cut
    measured_from = sorted({p.measured_from for p in data.padding})
    evidence = {
        "padding_share": padding_share,
        "real_elements": real,
        "padded_elements": padded,
        "trimmable_padding_share": sum(p.trimmable_elements for p in data.padding) / padded,
        "measured_from": measured_from,
        "batches_measured": len(data.padding),
        "batch_size": data.batch_size,
        "min_length": min(lengths),
        "max_length": max(lengths),
        "bucketed_padding_share": 1.0 - real / bucketed if bucketed > 0 else 0.0,
        "model_time_share": model_share,
        "predicted_saving": {cure: impact} if cure else {},
        "prediction": "model work proportional to elements fed; "
        + ("bucketing simulated on the measured lengths" if cure == CURE else "padding columns cut per batch"),
    }
    summary = (
        f"{padding_share:.0%} of the elements the model gets are padding "
        f"(lengths {evidence['min_length']}..{evidence['max_length']}, batch size {data.batch_size}"
        f"{', read from the attention mask' if MASK in measured_from else ''}); "
        f"the model takes {model_share:.0%} of end-to-end time, so {share:.0%} goes to padding; "
        + _cure_clause(cure, evidence, impact)
    )
    return [
        Finding.from_impact(
            "padding",
            share=share,
            impact=impact,
            summary=summary,
            evidence=evidence,
            recommendations=[cure] if cure and impact > 0 else [],
        )
    ]
