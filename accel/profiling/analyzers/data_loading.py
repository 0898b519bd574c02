"""data_loading: the model waits for data at the iterator.

Evidence comes from two measurements in accel.profiling.stages: the wait at the DataLoader iterator in the
end-to-end pass (the share of steady-state time the model is idle), and each loader stage's cost
per sample measured on its own in the main process.

Predictions use a rate model. A loader with W workers on C cores delivers min(W, C) / sum(V_i)
samples per second, where V_i are the per-sample costs of decode, transform and collate; the
model consumes 1 / V_model. With workers the two overlap, so a sample costs max(V_model,
sum(V_i) / min(W, C)); on a CPU device the workers also take cores from the model, so a sample
costs at least V_model + sum(V_i) / C. Without workers the two run one after the other.
A cure cannot save more than the measured wait, so each predicted saving is capped by it (without
workers, by the part of the wait the stages' own costs explain).

The split with input_decoding: when decode is the loader's most expensive stage, input_decoding
takes decode's part of the wait and of the predicted saving (decode's fraction of sum(V_i));
data_loading keeps the rest. The two shares add up to the measured wait share, never more.
"""

from __future__ import annotations

import dataclasses

from accel.core.machine import Machine
from accel.profiling.analyzers import Role, register
from accel.profiling.data import ProfileData
from accel.profiling.rates import LoaderModel, loader_model, rate_evidence, rate_text
from accel.profiling.report import Finding

# What the loader's rate model (accel.profiling.rates.LoaderModel.cures) predicts a saving for:
# more DataLoader workers, and decoded samples cached from the second epoch on.
CURES = ("loader.tune", "cache.decoded")


@register("data_loading", Role.OTHER, reads=("stages", "end_to_end"), recommends=CURES)
def analyze(data: ProfileData, machine: Machine) -> list[Finding]:
    model = loader_model(data, machine)
    if model is None:
        return []
    keep = 1.0 - model.decode_fraction
    share = model.wait_share * keep
    impact = model.best_saving * keep
    evidence = rate_evidence(model)
    evidence.update(
        {"decode_fraction_reported_as_input_decoding": model.decode_fraction, "tuned_workers": model.tuned_workers}
    )
    best = next(iter(model.cures))
    summary = (
        f"the model waits for data {model.wait_share:.0%} of the time with num_workers={model.workers}; "
        f"the loader delivers {rate_text(model.loader_samples_per_s)} samples/s against the model's "
        f"{rate_text(model.model_samples_per_s)}, {_who_limits(model)}"
    )
    if model.decode_fraction > 0:
        summary += f" (decode's {model.decode_fraction:.0%} of loading is reported as input_decoding)"
    if model.best_saving > 0:
        cores = f"{model.cores} cores" if model.cores >= data.cores else f"the {model.cores} of {data.cores} cores idle"
        cure = (
            f"num_workers={model.tuned_workers} on {cores}"
            if best == "loader.tune"
            else "caching decoded samples from the second epoch on"
        )
        summary += f"; {cure} is predicted to save {model.best_saving:.0%} of end-to-end time"
        if model.decode_fraction > 0:
            summary += f", {impact:.0%} of it counted here"
    quiet = dataclasses.replace(model, cores=data.cores).best_saving * keep if model.cores < data.cores else impact
    if quiet > impact:  # other work holds cores the workers would use (accel.profiling.contention)
        evidence["predicted_saving_on_a_quiet_machine"] = quiet
        summary += (
            f"; other work holds {data.cores - model.cores} of the {data.cores} cores (load average "
            f"{data.extra['contention']['load_average']:.1f}), so the cure is predicted from the idle ones: on a quiet "
            f"machine it would save {quiet:.0%}, too noisy to decide here (profile on a quieter machine)"
        )
    recommendations = [name for name, saving in model.cures.items() if saving > 0]
    return [
        Finding.from_impact(
            "data_loading",
            share=share,
            impact=impact,
            summary=summary,
            evidence=evidence,
            recommendations=recommendations,
        )
    ]


def _who_limits(model: LoaderModel) -> str:
    """Which side limits, in words that agree with the rates just quoted."""
    if model.loader_limits:
        return f"so {model.limiting_stage} limits throughput"
    if model.workers == 0:
        return "so the loader keeps up on its own but runs in line (num_workers=0): its time adds to the model's"
    return "so on average the loader keeps up: the wait is not its rate (start-up, or batches that arrive unevenly)"
