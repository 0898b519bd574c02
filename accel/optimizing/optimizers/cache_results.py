"""`cache.results`: skip the model for inputs it has already seen.

A forward wrapper splits each batch into samples, hashes each sample's content, serves the repeats
from an in-memory LRU cache bounded in bytes, runs the model on the sub-batch of new samples only,
and puts the batch's output back together in order. Only sound for deterministic models whose output
for a sample does not depend on the rest of the batch: models in training mode are refused, and the
model runs twice on the example batch and must give identical outputs.

The cache lives as long as the pipeline object (a serving process); the optimize engine empties it
(`reset_state()`) before each timed pass, and Applied.notes reports the hit rate and speedup of one
cold pass over the source: what a new stream with the same repeat pattern would see.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import torch

from accel.core.hashing import content_digest
from accel.core.measure import now
from accel.core.pipeline import Pipeline, batch_length, split_batch
from accel.optimizing.optimizers import Applied, Context, Optimizer, register
from accel.optimizing.optimizers.cache_decoded import same_sample

DEFAULT_MAX_BYTES = 256 << 20
# The cold pass measured for the notes covers at most this many samples of the source.
MEASURE_SAMPLES = 512


@dataclasses.dataclass(frozen=True)
class CacheResultsConfig:
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {self.max_bytes}")


def take(batch: Any, indices: list[int]) -> Any:
    """The samples at `indices` of a collated batch, still collated."""
    if isinstance(batch, torch.Tensor):
        return batch[indices]
    if isinstance(batch, tuple):
        return tuple(take(part, indices) for part in batch)
    if isinstance(batch, Mapping):
        return {key: take(value, indices) for key, value in batch.items()}
    if isinstance(batch, list):
        return [batch[i] for i in indices]
    raise TypeError(f"cannot split a batch of {type(batch).__name__}")


def combine(items: Sequence[Any]) -> Any:
    """The inverse of split_batch: one collated output from per-sample outputs."""
    first = items[0]
    if isinstance(first, torch.Tensor):
        return torch.stack(list(items))
    if isinstance(first, tuple):
        return tuple(combine([item[i] for item in items]) for i in range(len(first)))
    if isinstance(first, Mapping):
        return {key: combine([item[key] for item in items]) for key in first}
    return list(items)


def nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, (tuple, list)):
        return sum(nbytes(v) for v in value)
    if isinstance(value, Mapping):
        return sum(nbytes(v) for v in value.values())
    return 64


def _detached(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, tuple):
        return tuple(_detached(v) for v in value)
    if isinstance(value, Mapping):
        return {k: _detached(v) for k, v in value.items()}
    return value


class ResultCache:
    """The forward wrapper: per-sample LRU over content hashes, bounded in bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.entries: collections.OrderedDict[str, tuple[Any, int]] = collections.OrderedDict()
        self.bytes_held = 0
        self.hits = 0
        self.misses = 0

    def reset_state(self) -> None:
        """Forget every entry: the optimize engine calls this before each timed pass, so a
        throughput measurement sees one cold pass, not a cache warmed by the previous pass."""
        self.entries.clear()
        self.bytes_held = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def __call__(self, batch: Any, forward: Callable[[Any], Any]) -> Any:
        size = batch_length(batch)
        try:
            keys = [content_digest(take(batch, [i])) for i in range(size)]
        except TypeError:
            keys = [None]
        if any(key is None for key in keys):
            self.misses += size
            return forward(batch)
        return self._lookup(batch, [key for key in keys if key is not None], forward)

    def _lookup(self, batch: Any, keys: list[str], forward: Callable[[Any], Any]) -> Any:
        size = len(keys)
        outputs: list[Any] = [None] * size
        missing: list[int] = []
        for i, key in enumerate(keys):
            entry = self.entries.get(key)
            if entry is None:
                missing.append(i)
            else:
                self.entries.move_to_end(key)
                outputs[i] = entry[0]
        unique: list[int] = []
        if missing:
            # Run each new input once, even when it repeats within this batch.
            first_of: dict[str, int] = {}
            for i in missing:
                first_of.setdefault(keys[i], i)
            unique = list(first_of.values())
            self.misses += len(unique)
            computed = forward(batch if len(unique) == size else take(batch, unique))
            pieces = dict(zip(unique, split_batch(computed, len(unique))))
            for i in missing:
                outputs[i] = pieces[first_of[keys[i]]]
            for i, piece in pieces.items():
                self._store(keys[i], piece)
        self.hits += size - len(unique)
        return combine(outputs)

    def _store(self, key: str, value: Any) -> None:
        if key in self.entries:
            return
        value = _detached(value)
        cost = nbytes(value)
        if cost > self.max_bytes:
            return
        self.entries[key] = (value, cost)
        self.bytes_held += cost
        while self.bytes_held > self.max_bytes:
            _, (_, freed) = self.entries.popitem(last=False)
            self.bytes_held -= freed


def _run_seconds(pipeline: Pipeline) -> float:
    start = now()
    pipeline.run()
    return now() - start


@register
class CacheResults(Optimizer):
    name = "cache.results"
    cures = ("repeated_inputs",)
    description = "Serve repeated model inputs from an in-memory result cache (content-hashed, LRU, bytes-bounded)."
    Config = CacheResultsConfig

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        if isinstance(pipeline.forward_wrapper, ResultCache):
            return "the pipeline already has a result cache"
        if pipeline.forward_wrapper is not None:
            return "the pipeline's forward is already wrapped by another optimization"
        if isinstance(pipeline.model, torch.nn.Module) and pipeline.model.training:
            return "the model is in training mode (dropout, batch statistics): results are not a function of the input"
        batch = pipeline.example_batch()
        with torch.inference_mode():
            first, second = pipeline.forward(batch), pipeline.forward(batch)
        if not same_sample(first, second):
            return "the model gives different outputs for the same input (random?): caching would freeze one draw"
        try:
            key = content_digest(take(batch, [0]))
        except TypeError:
            key = None
        if key is None:
            return f"model inputs of type {type(batch).__name__} cannot be split per sample and content-hashed"
        return None

    def apply(self, pipeline: Pipeline, config: CacheResultsConfig, context: Context) -> Applied:
        notes: dict[str, Any] = {}
        if pipeline.is_sequence:
            source = pipeline.source
            probe = pipeline.replace(
                source=[source[i] for i in range(min(len(source), MEASURE_SAMPLES))], batch_plan=None
            )
            cold = ResultCache(config.max_bytes)
            before = _run_seconds(probe)
            after = _run_seconds(probe.replace(forward_wrapper=cold))
            notes = {
                "hit_rate": cold.hit_rate,
                "hits": cold.hits,
                "misses": cold.misses,
                "cold_pass_speedup": before / after if after > 0 else float("inf"),
                "samples_measured": len(probe.source),
                "cache_bytes": cold.bytes_held,
            }
        cache = ResultCache(config.max_bytes)
        return Applied(pipeline.replace(forward_wrapper=cache), state={"max_bytes": config.max_bytes}, notes=notes)
