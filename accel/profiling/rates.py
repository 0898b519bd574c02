"""The loader's rate model: measured per-stage costs turned into rates and predicted savings.

Pure over ProfileData (no timing). A loader with W workers on C cores delivers min(W, C) / sum(V_i)
samples per second, where V_i are the per-sample costs of decode, transform and collate; the
model consumes 1 / V_model. With workers the two overlap, so a sample costs max(V_model,
sum(V_i) / min(W, C)); on a CPU device the workers also take cores from the model, so a sample
costs at least V_model + sum(V_i) / C. Without workers the two run one after the other.
A cure cannot save more than the measured wait, so each predicted saving is capped by it (without
workers, by the part of the wait the stages' own costs explain). The data_loading and
input_decoding analyzers both read it.
"""

from __future__ import annotations

import dataclasses
import math

from accel.core.machine import Machine
from accel.profiling.contention import idle_cores
from accel.profiling.data import ProfileData

LOADER_STAGES = ("decode", "transform", "collate")
# Fewer samples than this in the end-to-end pass and a wait share means nothing.
MIN_SAMPLES = 2


@dataclasses.dataclass(frozen=True)
class LoaderModel:
    """The measured loader and model rates, and what more workers or a decode cache would give."""

    per_sample_seconds: float
    compute_per_sample_seconds: float
    wait_share: float
    load_seconds: dict[str, float]
    workers: int
    cores: int
    contended: bool
    cacheable: bool

    @property
    def load_per_sample_seconds(self) -> float:
        return sum(self.load_seconds.values())

    def predicted_per_sample_seconds(self, load_seconds: float, workers: int) -> float:
        compute = self.compute_per_sample_seconds
        if workers <= 0:
            return compute + load_seconds
        overlapped = max(compute, load_seconds / min(workers, self.cores))
        if self.contended:
            return max(overlapped, compute + load_seconds / self.cores)
        return overlapped

    @property
    def explained_wait_share(self) -> float:
        """The part of the wait the loader stages account for. Without workers the loader runs in
        line, so the rest of the measured wait is iterator overhead and scheduling noise, which no
        cure of the stages removes; with workers the whole measured wait counts."""
        if self.workers > 0 or self.per_sample_seconds <= 0:
            return self.wait_share
        return min(self.wait_share, self.load_per_sample_seconds / self.per_sample_seconds)

    def saving(self, predicted_per_sample_seconds: float) -> float:
        if self.per_sample_seconds <= 0:
            return 0.0
        saved = 1.0 - predicted_per_sample_seconds / self.per_sample_seconds
        return min(max(saved, 0.0), self.explained_wait_share)

    @property
    def loader_samples_per_s(self) -> float:
        load = self.load_per_sample_seconds
        return max(self.workers, 1) / load if load > 0 else float("inf")

    @property
    def model_samples_per_s(self) -> float:
        compute = self.compute_per_sample_seconds
        return 1.0 / compute if compute > 0 else float("inf")

    @property
    def loader_limits(self) -> bool:
        return self.loader_samples_per_s < self.model_samples_per_s

    @property
    def limiting_stage(self) -> str:
        if not self.loader_limits or not self.load_seconds:
            return "model"
        return max(self.load_seconds, key=lambda name: self.load_seconds[name])

    @property
    def tuned_workers(self) -> int:
        return self.cores

    @property
    def workers_saving(self) -> float:
        if self.workers >= self.cores:
            return 0.0
        return self.saving(self.predicted_per_sample_seconds(self.load_per_sample_seconds, self.tuned_workers))

    @property
    def cache_saving(self) -> float:
        if not self.cacheable or "decode" not in self.load_seconds:
            return 0.0
        rest = self.load_per_sample_seconds - self.load_seconds["decode"]
        return self.saving(self.predicted_per_sample_seconds(rest, self.workers))

    @property
    def cures(self) -> dict[str, float]:
        """Optimizer name -> predicted saving, best first."""
        cures = {"loader.tune": self.workers_saving}
        if self.cacheable and "decode" in self.load_seconds:
            cures["cache.decoded"] = self.cache_saving
        return dict(sorted(cures.items(), key=lambda item: -item[1]))

    @property
    def best_saving(self) -> float:
        return max(self.cures.values(), default=0.0)

    @property
    def decode_fraction(self) -> float:
        """Decode's part of the loader when decode is its most expensive stage and it limits; else 0."""
        decode = self.load_seconds.get("decode", 0.0)
        load = self.load_per_sample_seconds
        if decode <= 0 or load <= 0 or not self.loader_limits or self.limiting_stage != "decode":
            return 0.0
        return decode / load


def loader_model(data: ProfileData, machine: Machine) -> LoaderModel | None:
    """The loader model of a measured pipeline or script; None when there is no data path."""
    e2e = data.end_to_end
    if e2e is None or e2e.samples < MIN_SAMPLES or e2e.seconds <= 0:
        return None
    per_sample = e2e.seconds / e2e.samples
    compute = e2e.compute_seconds / e2e.samples
    if data.mode == "script":
        wait = e2e.wait_seconds / e2e.samples
        # Without workers the wait is the loading itself; with W busy workers one sample costs W times
        # the time between samples.
        load = wait if e2e.num_workers == 0 else per_sample * min(e2e.num_workers, max(data.cores, 1))
        load_seconds = {"dataloader": load}
        cacheable = False
    else:
        if data.stage("collate") is None:
            return None
        stages = [data.stage(name) for name in LOADER_STAGES]
        load_seconds = {stage.name: stage.per_sample_seconds for stage in stages if stage is not None}
        cacheable = data.source_is_sequence
    return LoaderModel(
        per_sample_seconds=per_sample,
        compute_per_sample_seconds=compute,
        wait_share=e2e.wait_share,
        load_seconds=load_seconds,
        workers=e2e.num_workers,
        cores=idle_cores(data.extra, max(data.cores, 1)),  # the cores other work leaves to the workers
        contended=not machine.is_cuda,
        cacheable=cacheable,
    )


def _finite(rate: float) -> float | None:
    """JSON has no infinity: a stage that costs nothing measurable has no rate."""
    return rate if math.isfinite(rate) else None


def rate_text(rate: float) -> str:
    return f"{rate:,.0f}" if math.isfinite(rate) else "unbounded"


def rate_evidence(model: LoaderModel) -> dict:
    return {
        "wait_share": model.wait_share,
        "explained_wait_share": model.explained_wait_share,
        "num_workers": model.workers,
        "cores": model.cores,
        "per_sample_seconds": model.per_sample_seconds,
        "stage_samples_per_s": {name: (1.0 / cost if cost > 0 else None) for name, cost in model.load_seconds.items()},
        "loader_samples_per_s": _finite(model.loader_samples_per_s),
        "model_samples_per_s": _finite(model.model_samples_per_s),
        "limiting_stage": model.limiting_stage,
        "predicted_saving": model.cures,
        "rate_model": (
            "loader rate = min(W, C) / sum(per-sample stage seconds); per sample = "
            "max(model, loader) with workers (at least model + loader / C on CPU), "
            "model + loader without; saving capped by the measured wait"
        ),
    }
