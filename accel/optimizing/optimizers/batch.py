"""Batching: `batch.size` scans batch sizes for throughput; `batch.bucket` groups samples of
similar length into the same batch so less of each batch is padding.

`batch.size` picks the smallest batch whose throughput is within 5% of the plateau (the best size
scanned), within a memory and a latency limit: past the plateau a larger batch only costs memory
and latency (the reasoning of the Batching Configuration Advisor).

`batch.bucket` changes only which samples share a batch (through `Pipeline.batch_plan`);
`Pipeline.run()` puts results back in source order, so they agree per sample with the unbucketed run.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sized
from typing import Any, ClassVar

import torch

from accel.core.measure import now, peak_memory_bytes, time_calls
from accel.core.pipeline import Pipeline
from accel.optimizing.optimizers import Applied, Context, Optimizer, register

# Within 5% of the best throughput counts as on the plateau: that is about the run-to-run noise of
# a per-size measurement on a busy machine, so a larger size must beat it by more to be worth it.
DEFAULT_PLATEAU_TOLERANCE = 0.05
DEFAULT_MAX_BATCH_SIZE = 256
SCAN_BUDGET_SECONDS = 0.5


@dataclasses.dataclass(frozen=True)
class BatchSizeConfig:
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    plateau_tolerance: float = DEFAULT_PLATEAU_TOLERANCE
    memory_limit_bytes: int | None = None
    latency_limit_seconds: float | None = None

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if not (0.0 <= self.plateau_tolerance < 1.0):
            raise ValueError(f"plateau_tolerance must lie in 0..1, got {self.plateau_tolerance}")
        if self.memory_limit_bytes is not None and self.memory_limit_bytes <= 0:
            raise ValueError(f"memory_limit_bytes must be > 0, got {self.memory_limit_bytes}")
        if self.latency_limit_seconds is not None and self.latency_limit_seconds <= 0:
            raise ValueError(f"latency_limit_seconds must be > 0, got {self.latency_limit_seconds}")


@dataclasses.dataclass(frozen=True)
class SizePoint:
    batch_size: int
    samples_per_s: float
    latency_seconds: float
    peak_bytes: int | None = None


def choose_batch_size(points: list[SizePoint], config: BatchSizeConfig) -> tuple[int | None, str]:
    """The smallest size within `plateau_tolerance` of the best throughput among sizes that fit
    the limits; None with the reason when none fits. Pure, so it is tested on recorded points."""
    fitting = [
        p
        for p in points
        if (config.latency_limit_seconds is None or p.latency_seconds <= config.latency_limit_seconds)
        and (config.memory_limit_bytes is None or p.peak_bytes is None or p.peak_bytes <= config.memory_limit_bytes)
    ]
    if not fitting:
        return None, "no scanned batch size fits the memory and latency limits"
    plateau = max(p.samples_per_s for p in fitting)
    chosen = min(
        (p for p in fitting if p.samples_per_s >= (1.0 - config.plateau_tolerance) * plateau),
        key=lambda p: p.batch_size,
    )
    return (
        chosen.batch_size,
        f"plateau {plateau:,.1f} samples/s; batch {chosen.batch_size} reaches {chosen.samples_per_s:,.1f}",
    )


def _source_length(pipeline: Pipeline) -> int | None:
    return len(pipeline.source) if isinstance(pipeline.source, Sized) else None


@register
class BatchSize(Optimizer):
    name = "batch.size"
    cures = ("compute_bound", "memory_bandwidth", "overhead", "generation")
    description = (
        "Scan batch sizes; take the smallest within 5% of the throughput plateau, under memory/latency limits."
    )
    slot: ClassVar[str] = "batch.size"
    Config = BatchSizeConfig

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        if not pipeline.has_source:
            return "the pipeline has no source of samples, only a fixed example batch"
        length = _source_length(pipeline)
        if length is not None and length < 2:
            return "the source holds fewer than 2 samples"
        if pipeline.collate is None:
            # A few samples are enough to see that torch's default collate cannot stack them.
            probe = 8
            if pipeline.is_sequence:
                raw = [pipeline.source[i] for i in range(min(probe, len(pipeline.source)))]
            else:
                raw = list(itertools.islice(iter(pipeline.source), probe))
            try:
                pipeline.collate_fn()([pipeline.prepare(r) for r in raw])
            except (RuntimeError, TypeError) as exc:
                return (
                    f"the samples cannot be batched by torch's default collate ({str(exc).splitlines()[0]}): "
                    "variable-length samples need a collate that pads them before a larger batch can be tried"
                )
        return None

    def sizes(self, pipeline: Pipeline, config: BatchSizeConfig) -> list[int]:
        limit = min(config.max_batch_size, _source_length(pipeline) or config.max_batch_size)
        sizes, size = [], 1
        while size <= limit:
            sizes.append(size)
            size *= 2
        if pipeline.batch_size <= limit and pipeline.batch_size not in sizes:
            sizes.append(pipeline.batch_size)
        return sorted(sizes)

    def apply(self, pipeline: Pipeline, config: BatchSizeConfig, context: Context) -> Applied:
        started = now()
        points = []
        for size in self.sizes(pipeline, config):
            sized = pipeline.replace(batch_size=size, batch_plan=None)
            batch = sized.example_batch()

            def call(sized: Pipeline = sized, batch: Any = batch) -> Any:
                with torch.inference_mode():
                    return sized.forward(batch)

            timing = time_calls(call, warmup=2, min_repeats=3, budget_seconds=SCAN_BUDGET_SECONDS)
            peak = peak_memory_bytes(call) if config.memory_limit_bytes is not None else None
            points.append(SizePoint(size, size / timing.median, timing.median, peak))
        chosen, why = choose_batch_size(points, config)
        chosen = chosen or pipeline.batch_size
        return Applied(
            pipeline=pipeline.replace(batch_size=chosen),
            state={"batch_size": chosen, "scan": [dataclasses.asdict(p) for p in points]},
            setup_seconds=now() - started,
            notes={"batch_size": chosen, "was": pipeline.batch_size, "why": why},
        )

    def restore(self, pipeline: Pipeline, config: BatchSizeConfig, state: dict[str, Any], lock_dir: Any) -> Pipeline:
        return pipeline.replace(batch_size=int(state["batch_size"]))


LENGTH_FROM = ("auto", "raw", "prepared")


@dataclasses.dataclass(frozen=True)
class BucketConfig:
    length_from: str = "auto"  # raw: len(raw sample); prepared: first dim of the prepared tensor

    def __post_init__(self) -> None:
        if self.length_from not in LENGTH_FROM:
            raise ValueError(f"length_from must be one of {', '.join(LENGTH_FROM)}, got {self.length_from!r}")


def sample_length(sample: Any) -> int:
    """The length of a prepared sample: the first dimension of its first tensor."""
    if isinstance(sample, torch.Tensor):
        return int(sample.shape[0]) if sample.dim() > 0 else 1
    if isinstance(sample, Mapping):
        return sample_length(next(iter(sample.values())))
    if isinstance(sample, (tuple, list)) and sample and isinstance(sample[0], (torch.Tensor, Mapping, tuple, list)):
        return sample_length(sample[0])
    if isinstance(sample, Sized):
        return len(sample)
    return 1


class BucketPlan:
    """A batch plan: source indices sorted by sample length, cut into batches of batch_size."""

    def __init__(self, length_from: str) -> None:
        self.length_from = length_from
        self._lengths: dict[int, list[int]] = {}

    def lengths(self, pipeline: Pipeline) -> list[int]:
        key = id(pipeline.source)
        if key not in self._lengths:
            source = pipeline.source
            use_raw = self.length_from == "raw" or (
                self.length_from == "auto"
                and len(source) > 0
                and isinstance(source[0], Sized)
                and not isinstance(source[0], (bytes, str))
                and not isinstance(source[0], Mapping)
            )
            self._lengths[key] = [
                sample_length(source[i]) if use_raw else sample_length(pipeline.prepare(source[i]))
                for i in range(len(source))
            ]
        return self._lengths[key]

    def __call__(self, pipeline: Pipeline) -> list[list[int]]:
        lengths = self.lengths(pipeline)
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        size = pipeline.batch_size
        return [order[i : i + size] for i in range(0, len(order), size)]

    def __repr__(self) -> str:
        return f"BucketPlan(length_from={self.length_from!r})"


@register
class BatchBucket(Optimizer):
    name = "batch.bucket"
    cures = ("padding",)
    description = "Group samples of similar length into batches to cut padding; results stay in source order."
    slot: ClassVar[str] = "batching"
    Config = BucketConfig

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        if not pipeline.is_sequence:
            return "bucketing needs a source with len() and indexing (a list or a map-style Dataset)"
        if pipeline.batch_plan is not None:
            return "the pipeline already has a batch plan"
        if pipeline.batch_size < 2:
            return "batch_size is 1, so no batch holds padding"
        lengths = BucketPlan("auto").lengths(pipeline)
        if len(set(lengths)) < 2:
            return "all samples have the same length: nothing to bucket"
        return None

    def apply(self, pipeline: Pipeline, config: BucketConfig, context: Context) -> Applied:
        started = now()
        plan = BucketPlan(config.length_from)
        lengths = plan.lengths(pipeline)
        return Applied(
            pipeline=pipeline.replace(batch_plan=plan),
            state={"length_from": config.length_from},
            setup_seconds=now() - started,
            notes={"samples": len(lengths), "distinct_lengths": len(set(lengths))},
        )

    def restore(self, pipeline: Pipeline, config: BucketConfig, state: dict[str, Any], lock_dir: Any) -> Pipeline:
        return pipeline.replace(batch_plan=BucketPlan(config.length_from))
