"""Measuring a pipeline's stages: what each costs on its own, and what the whole costs as it runs.

Two passes, both light (no profiler attached):
1. the stage pass, in the main process: decode, transform, collate, forward and postprocess are
   timed one by one on the same samples, so each stage's per-sample cost is known on its own;
2. the end-to-end pass: the pipeline runs as `run()` runs it, through its DataLoader with its
   num_workers, and the time the model waits at the iterator is measured there (not guessed).
   With workers, the wait for the first batch (worker start-up) is kept apart as
   `startup_seconds` (per pass); `seconds` covers the steady state, so wait + compute add up to
   it. Short passes are repeated (see MIN_END_TO_END_SECONDS) and summed.

The result, `ProfileData`, is plain data that analyzers read.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Callable

import torch

from accel.core.budget import PassBudget
from accel.core.errors import PipelineError
from accel.core.hashing import content_hash
from accel.core.measure import Clock, now
from accel.core.outputs import refuse_output_without_numbers
from accel.core.pipeline import Pipeline, batch_length, split_batch
from accel.core.watchdog import watching
from accel.profiling.data import EndToEnd, ProfileData, StageTiming
from accel.profiling.padding_measure import measure_padding

STAGE_NAMES = ("decode", "transform", "collate", "model", "postprocess")
DEFAULT_MAX_SAMPLES = 256
DEFAULT_BUDGET_SECONDS = 20.0
# The end-to-end pass repeats until it has run this long (within the budget): one scheduling
# hiccup on a busy machine is several milliseconds, which would be a large share of a 30 ms pass.
MIN_END_TO_END_SECONDS = 0.5
MAX_END_TO_END_PASSES = 8


def _timed(clock: Clock, fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = clock()
    value = fn()
    return value, clock() - t0


def _run_stage(name: str, fn: Callable[[], Any]) -> Any:
    try:
        with watching(name):
            return fn()
    except Exception as exc:
        raise PipelineError(
            f"the pipeline's {name} stage raised {type(exc).__name__}: {exc}",
            f"fix {name} in the pipeline file (use --debug for the traceback)",
        ) from exc


def measure_pipeline(
    pipeline: Pipeline,
    *,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
    clock: Clock = now,
    cores: int = 1,
    sync: Callable[[], None] = lambda: None,
    budget: PassBudget | None = None,
) -> ProfileData:
    """Measure each stage on its own, then the whole pipeline as it runs.

    With `budget` (a Deadline's share), its seconds replace `budget_seconds` and its calls are
    counted; a model called without a source is timed as the budget allows (at least one call).
    """
    if budget is not None:
        budget_seconds = budget.seconds
    data = ProfileData(
        target=pipeline.name,
        batch_size=pipeline.batch_size,
        num_workers=pipeline.num_workers,
        cores=cores,
        source_is_sequence=pipeline.is_sequence if pipeline.has_source else True,
    )
    if (
        pipeline.has_source
        and not pipeline.is_sequence
        and _run_stage("source", lambda: iter(pipeline.source)) is pipeline.source
    ):
        raise PipelineError(
            f"the pipeline's source is a one-shot {type(pipeline.source).__name__}: accel reads the source more than once",
            "pass a list, or an object whose __iter__ starts a fresh pass over the samples",
        )
    with torch.inference_mode():
        if not pipeline.has_source:
            _measure_inputs_only(pipeline, data, clock, budget_seconds, sync, budget)
            return data
        samples_measured = _stage_pass(pipeline, data, max_samples, budget_seconds / 2, clock, sync)
        data.end_to_end = _end_to_end_passes(pipeline, samples_measured, budget_seconds / 2, clock, sync)
    if budget is not None:  # the stage pass's batches, its warm-up batch and the end-to-end batches
        budget.calls += -(-samples_measured // max(pipeline.batch_size, 1)) + 1 + data.end_to_end.batches
    return data


def _measure_inputs_only(
    pipeline: Pipeline,
    data: ProfileData,
    clock: Clock,
    budget: float,
    sync: Callable[[], None],
    shared: PassBudget | None = None,
) -> None:
    from accel.core.budget import time_calls_within
    from accel.core.measure import time_calls

    batch = pipeline.inputs
    checked: list[bool] = []

    def call() -> Any:
        output = _run_stage(pipeline.forward_stage, lambda: pipeline.forward(batch))
        if not checked:  # the first call's output only: the timed calls stay as they are
            refuse_output_without_numbers(output)
            checked.append(True)
        return output

    if shared is not None:
        measurement = time_calls_within(call, shared, sync=sync)
    else:
        measurement = time_calls(call, budget_seconds=min(budget, 5.0), clock=clock, sync=sync)
    size = batch_length(batch)
    data.model_latency = measurement
    # One batch of `size` samples takes the median: per sample that is median / size, the same
    # rate as the end-to-end line below (the stage table and the throughput line must agree).
    data.stages = [StageTiming("model", measurement.median, size)]
    data.batch_size = size
    data.end_to_end = EndToEnd(
        seconds=measurement.median,
        samples=size,
        batches=1,
        wait_seconds=0.0,
        compute_seconds=measurement.median,
        num_workers=0,
        batch_seconds=measurement.samples,
    )


def _source_head(pipeline: Pipeline, limit: int) -> list[Any]:
    if pipeline.is_sequence:
        return [pipeline.source[i] for i in range(min(limit, len(pipeline.source)))]
    return list(itertools.islice(iter(pipeline.source), limit))


@dataclasses.dataclass
class _StageTimes:
    """The seconds each stage took so far in the stage pass, and what the pass records on the way."""

    pipeline: Pipeline
    data: ProfileData
    clock: Clock
    sync: Callable[[], None]
    collate: Callable[[list[Any]], Any]
    totals: dict[str, float] = dataclasses.field(default_factory=lambda: {name: 0.0 for name in STAGE_NAMES})

    def timed(self, stage: str, fn: Callable[[], Any]) -> Any:
        value, seconds = _timed(self.clock, fn)
        self.totals[stage] += seconds
        return value

    def prepare(self, raw: Any) -> Any:
        """One raw sample decoded and transformed (a stage the pipeline lacks passes it on)."""
        decode, transform = self.pipeline.decode, self.pipeline.transform
        decoded = self.timed("decode", lambda: _run_stage("decode", lambda: decode(raw)) if decode else raw)
        sample = self.timed(
            "transform", lambda: _run_stage("transform", lambda: transform(decoded)) if transform else decoded
        )
        self.data.sample_hashes.append(content_hash(sample))
        return sample

    def run_batch(self, prepared: list[Any]) -> None:
        """Collate, model (waited for) and postprocess of one batch of prepared samples."""
        batch = self.timed("collate", lambda: _run_stage("collate", lambda: self.collate(prepared)))
        padding = measure_padding(prepared, batch)
        if padding is not None:
            self.data.padding.append(padding)
        t0 = self.clock()
        output = _run_stage(self.pipeline.forward_stage, lambda: self.pipeline.forward(batch))
        self.sync()
        self.totals["model"] += self.clock() - t0
        postprocess = self.pipeline.postprocess
        if postprocess is not None:
            items = split_batch(output, len(prepared))
            self.timed("postprocess", lambda: [_run_stage("postprocess", lambda: postprocess(x)) for x in items])


def _batch_plan(pipeline: Pipeline, samples: int) -> list[list[int]]:
    """The sample indices of each batch: the pipeline's own batching, else consecutive batches."""
    plan = pipeline.batch_indices() if pipeline.is_sequence else None
    if plan is None:
        plan = [list(range(i, min(i + pipeline.batch_size, samples))) for i in range(0, samples, pipeline.batch_size)]
    return plan


def _stage_pass(
    pipeline: Pipeline, data: ProfileData, max_samples: int, budget: float, clock: Clock, sync: Callable[[], None]
) -> int:
    raw_samples = _source_head(pipeline, max_samples)
    if not raw_samples:
        raise PipelineError("the pipeline's source yielded no samples", "give the source at least one sample")
    plan = _batch_plan(pipeline, len(raw_samples))
    times = _StageTimes(pipeline, data, clock, sync, pipeline.collate_fn())
    # Warm-up: one batch through every stage, untimed (first calls allocate and pick kernels).
    first = [pipeline.prepare(raw_samples[i]) for i in plan[0] if i < len(raw_samples)]
    refuse_output_without_numbers(_run_stage(pipeline.forward_stage, lambda: pipeline.forward(times.collate(first))))
    began = clock()
    counted = 0
    for indices in plan:
        indices = [i for i in indices if i < len(raw_samples)]
        if not indices:
            continue
        times.run_batch([times.prepare(raw_samples[i]) for i in indices])
        counted += len(indices)
        if clock() - began > budget and counted >= pipeline.batch_size * 2:
            break
    present = {
        "decode": pipeline.decode,
        "transform": pipeline.transform,
        "collate": True,
        "model": True,
        "postprocess": pipeline.postprocess,
    }
    data.stages = [StageTiming(name, times.totals[name], counted) for name in STAGE_NAMES if present[name]]
    return counted


def _end_to_end_passes(
    pipeline: Pipeline, samples: int, budget: float, clock: Clock, sync: Callable[[], None]
) -> EndToEnd:
    """Whole passes over the measured samples, summed, until they add up to a measurable time."""
    began = clock()
    passes = [_end_to_end_pass(pipeline, samples, budget, clock, sync)]
    while (
        len(passes) < MAX_END_TO_END_PASSES
        and sum(p.seconds for p in passes) < MIN_END_TO_END_SECONDS
        and clock() - began < budget / 2
    ):
        passes.append(_end_to_end_pass(pipeline, samples, budget, clock, sync))
    return EndToEnd(
        seconds=sum(p.seconds for p in passes),
        samples=sum(p.samples for p in passes),
        batches=sum(p.batches for p in passes),
        wait_seconds=sum(p.wait_seconds for p in passes),
        compute_seconds=sum(p.compute_seconds for p in passes),
        num_workers=pipeline.num_workers,
        batch_seconds=tuple(t for p in passes for t in p.batch_seconds),
        startup_seconds=sum(p.startup_seconds for p in passes) / len(passes),
    )


def _end_to_end_pass(
    pipeline: Pipeline, samples: int, budget: float, clock: Clock, sync: Callable[[], None]
) -> EndToEnd:
    batches_wanted = max(1, -(-samples // pipeline.batch_size))
    wait = compute = startup = 0.0
    batch_times: list[float] = []
    counted = batches = 0
    created = clock()
    iterator = iter(pipeline.loader(limit_batches=batches_wanted))
    began = created
    while True:
        t0 = clock()
        try:
            batch = next(iterator)
        except StopIteration:
            break
        except Exception as exc:
            raise PipelineError(
                f"loading a batch raised {type(exc).__name__}: {exc}",
                "fix the pipeline's decode, transform or collate (use --debug)",
            ) from exc
        t1 = clock()
        if batches == 0 and pipeline.num_workers > 0:
            startup = t1 - created
            began = t1
        else:
            wait += t1 - t0
        output = _run_stage(pipeline.forward_stage, lambda: pipeline.forward(batch))
        sync()
        if pipeline.postprocess is not None:
            for item in split_batch(output, batch_length(batch)):
                pipeline.postprocess(item)
        t2 = clock()
        compute += t2 - t1
        batch_times.append(t2 - t0)
        counted += batch_length(batch)
        batches += 1
        if clock() - began > budget and batches >= 2:
            break
    seconds = max(clock() - began, wait + compute)
    return EndToEnd(
        seconds=seconds,
        samples=counted,
        batches=batches,
        wait_seconds=wait,
        compute_seconds=compute,
        num_workers=pipeline.num_workers,
        batch_seconds=tuple(batch_times),
        startup_seconds=startup,
    )
