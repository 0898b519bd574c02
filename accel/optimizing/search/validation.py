"""What the guard compares: the baseline's and a candidate's outputs on the same samples.

- Forward outputs on several batches of the source (Guard.validation_batches), split into samples.
  A candidate calibrated on the source (onnx.int8_static says so in its lock state or notes, under
  `calibration_batches`) is validated on the batches after those it was calibrated on: a model
  tuned on a batch looks best on that batch. When there are no such batches the guard fails with
  the reason instead of validating on what it was fitted to.
- The per-sample results of `run()` over the whole source, when they matter (throughput target, or
  the pipeline has a metric), and the metric on them.

Baseline outputs are computed once per batch and reused for every candidate.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator

import torch

from accel.core.errors import AccelError, PipelineError
from accel.core.outputs import refuse_output_without_numbers
from accel.core.pipeline import Pipeline, batch_length, split_batch
from accel.optimizing.recipes.schema import Guard
from accel.optimizing.search.fidelity import Fidelity, compare_samples

# The notes key through which an optimizer says how many leading source batches it was fitted on.
CALIBRATION_NOTE = "calibration_batches"


def reset_pipeline_state(pipeline: Pipeline) -> None:
    """Clear state an optimization keeps across passes (an in-memory result cache): each timed
    pass is then one cold pass over the source, as a fresh process would see it. Pipeline-level
    callables opt in with a `reset_state()` method."""
    for part in (pipeline.forward_wrapper, pipeline.decode, pipeline.transform, pipeline.collate, pipeline.batch_plan):
        reset = getattr(part, "reset_state", None)
        if callable(reset):
            reset()


def calibrated_batches(notes: list[dict[str, Any]]) -> int:
    """The most leading source batches any of these optimizations was fitted on."""
    counts = [n.get(CALIBRATION_NOTE) for n in notes]
    return max([int(c) for c in counts if isinstance(c, int) and not isinstance(c, bool)] or [0])


def samples_of(output: Any, batch: Any) -> list[Any]:
    """A batched output split into per-sample items (as run() splits it); the whole output as
    one item when it does not split."""
    try:
        return split_batch(output, batch_length(batch))
    except (RuntimeError, ValueError):
        return [output]


@contextlib.contextmanager
def baseline_errors() -> Iterator[None]:
    """The baseline raising before any optimization is tried is the pipeline's own error: one line."""
    try:
        yield
    except AccelError:
        raise
    except Exception as exc:
        from accel.optimizing.search.outcome import failure_message

        raise PipelineError(
            f"the pipeline raised while its baseline was timed: {failure_message(exc)}",
            "fix the pipeline (accel profile FILE shows which stage raises)",
        ) from exc


# The pipeline's own data stages: code of the user's that a candidate runs as it is (calibrating on,
# caching or re-batching the source), so an error raised inside it is the pipeline's, not the candidate's.
USER_DATA_STAGES = ("source", "decode", "transform", "collate")
# How deep a chain of wrapped exceptions (raise ... from) is searched for the user's frame.
CAUSE_DEPTH = 8


def user_code_of(pipeline: Pipeline) -> dict[Any, str]:
    """The code objects of the pipeline's own data stages, each with its stage's name: a function's
    code, a callable object's __call__, a Dataset's __getitem__/__iter__, a generator's frame."""
    found: dict[Any, str] = {}
    for stage in USER_DATA_STAGES:
        part = getattr(pipeline, stage, None)
        if part is None:
            continue
        candidates = [part, getattr(type(part), "__call__", None)]
        if stage == "source":
            candidates = [getattr(type(part), "__getitem__", None), getattr(type(part), "__iter__", None)]
            candidates.append(getattr(part, "gi_code", None))
        for item in candidates:
            code = item if hasattr(item, "co_name") else getattr(item, "__code__", None)
            if code is not None:
                found[code] = stage
    return found


def user_stage_raised(exc: BaseException, pipeline: Pipeline) -> str | None:
    """The pipeline's data stage (decode, transform...) that `exc` was raised inside, or None when
    the error is not from the user's data code: a frame of that code on the traceback, or (an error
    from a DataLoader worker, re-raised as text) that code named in the worker's traceback."""
    codes = user_code_of(pipeline)
    if not codes:
        return None
    seen: BaseException | None = exc
    for _ in range(CAUSE_DEPTH):
        if seen is None:
            return None
        traceback = seen.__traceback__
        while traceback is not None:
            stage = codes.get(traceback.tb_frame.f_code)
            if stage is not None:
                return stage
            traceback = traceback.tb_next
        text = str(seen)
        if "DataLoader worker" in text:
            for code, stage in codes.items():
                if f'File "{code.co_filename}"' in text and f"in {code.co_name}\n" in text:
                    return stage
        seen = seen.__cause__ or seen.__context__
    return None


# The slots of optimizers that change how a data stage runs (decode.reduced decodes at a reduced
# size): the user's code raising under them may be the candidate's doing.
DATA_SLOT_PREFIX = "data."


def refuse_user_data_failure(exc: Exception, baseline: Pipeline, trying: str, slot: str) -> None:
    """A candidate's trial that failed inside the pipeline's own source/decode/transform code is the
    pipeline's error (the baseline, timed on the example batch alone, never reached it): one line
    ending the search, not a 'failed' row for every candidate that reads the source. A candidate
    in a data slot changed that code's input, so its failure stays its own."""
    if slot.startswith(DATA_SLOT_PREFIX):
        return
    stage = user_stage_raised(exc, baseline)
    if stage is None:
        return
    from accel.optimizing.search.outcome import failure_message

    raise PipelineError(
        f"the pipeline's {stage} raised while {trying} ran over the source: {failure_message(exc)}",
        f"fix the {stage} (accel profile FILE runs every sample and shows which stage raises)",
    ) from exc


class Validator:
    """The baseline's outputs, and the comparison of a candidate's against them."""

    def __init__(self, baseline: Pipeline, *, per_sample_results: bool) -> None:
        self.baseline = baseline
        self._batches: list[Any] = []
        self._loaded_limit = 0
        self._reference: dict[int, Any] = {}
        self.results = None
        self.metric = None
        with baseline_errors():
            refuse_output_without_numbers(self.reference(0))
        if baseline.has_source and (per_sample_results or baseline.metric is not None):
            self.results = baseline.run()
            if baseline.metric is not None:
                self.metric = float(baseline.metric(self.results))

    def batches(self, count: int) -> list[Any]:
        """The first `count` batches of the baseline's source (fewer when it has fewer)."""
        if not self.baseline.has_source:
            return [self.baseline.inputs]
        if count > self._loaded_limit:
            self._batches = list(self.baseline.iter_batches(limit_batches=count, num_workers=0))
            self._loaded_limit = count
        return self._batches[:count]

    def reference(self, index: int) -> Any:
        if index not in self._reference:
            with torch.inference_mode():
                self._reference[index] = self.baseline.forward(self.batches(index + 1)[index])
        return self._reference[index]

    def check(self, candidate: Pipeline, guard: Guard, skip_batches: int = 0) -> Fidelity:
        """Compare `candidate` with the baseline on `guard.validation_batches` batches after the
        first `skip_batches` (those it was calibrated on), and on run()'s results when kept."""
        available = self.batches(skip_batches + guard.validation_batches)
        indices = list(range(skip_batches, len(available)))
        if not indices:
            where = "source" if self.baseline.has_source else "example inputs (the pipeline has no source)"
            return Fidelity(
                note=f"calibrated on all {len(available)} batches of the {where}: no held-out samples to validate on"
            )
        pairs: list[tuple[str, Any, Any]] = []
        with torch.inference_mode():
            for index in indices:
                batch = available[index]
                reference = samples_of(self.reference(index), batch)
                produced = samples_of(candidate.forward(batch), batch)
                if len(produced) != len(reference):
                    return Fidelity(shape_error=f"batch {index}: {len(produced)} samples, baseline {len(reference)}")
                pairs.extend((f"batch {index} sample {i}", r, c) for i, (r, c) in enumerate(zip(reference, produced)))
        metric = None
        if self.results is not None:
            reset_pipeline_state(candidate)
            results = candidate.run()
            if len(results) != len(self.results):
                return Fidelity(shape_error=f"run() gave {len(results)} results, the baseline {len(self.results)}")
            pairs.extend((f"result {i}", r, c) for i, (r, c) in enumerate(zip(self.results, results)))
            if candidate.metric is not None:
                metric = float(candidate.metric(results))
        fidelity = compare_samples(pairs)
        if self.metric is not None:
            return _with_metric(fidelity, self.metric, metric)
        return fidelity


def _with_metric(fidelity: Fidelity, baseline: float, candidate: float | None) -> Fidelity:
    return dataclasses.replace(fidelity, metric_baseline=baseline, metric_candidate=candidate)
