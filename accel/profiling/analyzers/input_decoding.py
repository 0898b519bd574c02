"""input_decoding: decoding raw samples (image bytes, audio, JSON) is what limits the loader.

Named apart from data_loading when decode is the loader's most expensive stage and the loader
limits throughput. It takes decode's part of the measured wait (decode's fraction of the loader's
per-sample cost) and the same part of the best cure's predicted saving; data_loading keeps the
rest, so the two never count the same time twice. See accel.profiling.analyzers.data_loading for the model.
"""

from __future__ import annotations

from accel.core.machine import Machine
from accel.profiling.analyzers import Role, register
from accel.profiling.data import ProfileData
from accel.profiling.rates import loader_model, rate_evidence
from accel.profiling.report import Finding

# What the loader's rate model (accel.profiling.rates.LoaderModel.cures) predicts a saving for:
# more DataLoader workers, and decoded samples cached from the second epoch on.
CURES = ("loader.tune", "cache.decoded")


@register("input_decoding", Role.OTHER, reads=("stages", "end_to_end"), recommends=CURES)
def analyze(data: ProfileData, machine: Machine) -> list[Finding]:
    model = loader_model(data, machine)
    if model is None or model.decode_fraction <= 0:
        return []
    decode = data.stage("decode")
    if decode is None:
        return []
    fraction = model.decode_fraction
    share = model.wait_share * fraction
    impact = model.best_saving * fraction
    evidence = rate_evidence(model)
    evidence.update(
        {
            "decode_per_sample_seconds": decode.per_sample_seconds,
            "decode_samples_per_s": decode.samples_per_s if decode.seconds > 0 else None,
            "decode_fraction_of_loading": fraction,
            "samples_measured": decode.samples,
        }
    )
    cures = {name: saving for name, saving in model.cures.items() if saving > 0}
    summary = (
        f"decoding limits the pipeline: {decode.per_sample_seconds * 1e3:.2f} ms per sample "
        f"({decode.samples_per_s:,.0f} samples/s), {fraction:.0%} of the loader's cost, so "
        f"{share:.0%} of end-to-end time is spent waiting on decode"
    )
    if cures:
        best = next(iter(cures))
        summary += (
            f"; {best} is predicted to save {model.best_saving:.0%} of end-to-end time, {impact:.0%} of it counted here"
        )
    return [
        Finding.from_impact(
            "input_decoding",
            share=share,
            impact=impact,
            summary=summary,
            evidence=evidence,
            recommendations=list(cures),
        )
    ]
