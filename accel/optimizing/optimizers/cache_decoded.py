"""`cache.decoded`: keep decoded (and deterministically transformed) samples on disk.

The first pass decodes and stores every sample (the one-time build cost); later passes read the
memory-mapped record instead of decoding. The key covers the raw sample's content and a fingerprint
of the cached code (its bytecode, constants, defaults, closure values and the globals it reads,
recursively through helper functions), so editing a sample or the function misses; see
accel/optimizing/optimizers/_store.py for the store.

The versions of the libraries the cached code uses (the package of every module, class and function
it reaches) are part of the namespace: a new Pillow decodes to a new namespace, not to old records.

A raw sample is often only a reference (a file name joined to a root folder in decode, an index):
every file decode opens is recorded with the record (path, size, mtime_ns, inode; see _reads.py)
and checked on every hit, so a rewritten file is decoded again, never served stale. A stage that
reaches data accel cannot check (a network connection, a database) is not cached unless the config
opts in (`allow_untracked: true`).

Random augmentation must not be cached. Before caching, each stage runs on several samples, twice
each, with the global torch/numpy/random RNG states watched: if decode draws from an RNG or differs
between runs the cache refuses; if only the transform does, the cache keeps decode only and the
transform still runs on every pass (cache up to the last deterministic stage).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from accel._version import __version__
from accel.core.errors import CacheError, LockError
from accel.core.hashing import content_digest, digest
from accel.core.io import cache_root
from accel.core.measure import now
from accel.core.pipeline import Pipeline
from accel.optimizing.lock_files import resolve_lock_folder
from accel.optimizing.optimizers import Applied, Context, Optimizer, register
from accel.optimizing.optimizers._fingerprint import code_digest
from accel.optimizing.optimizers._reads import changed_file, draws_randomness, file_facts, recording_reads
from accel.optimizing.optimizers._store import DecodedStore, default_cache_dir

DEFAULT_MAX_BYTES = 4 << 30
# Samples timed to estimate the per-sample cost before and after caching.
COST_PROBE_SAMPLES = 8
# Samples each stage is run on (twice, RNG states watched) to judge it deterministic: one pair of
# calls freezes a 50% random flip into the cache half the time; four samples miss it 1 time in 16,
# and the RNG watch catches any draw from the global generators on the first.
DETERMINISM_PROBE_SAMPLES = 4


@dataclasses.dataclass(frozen=True)
class CacheDecodedConfig:
    cache_dir: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    prebuild: bool = True
    # Cache a stage that reads over the network or from a database (accel cannot see those change).
    allow_untracked: bool = False

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {self.max_bytes}")


# --- determinism -----------------------------------------------------------------------------------
def same_sample(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(same_sample(x, y) for x, y in zip(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same_sample(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@dataclasses.dataclass(frozen=True)
class CachePlan:
    """Which stages to cache: decode alone, or decode then transform."""

    stages: tuple[str, ...]
    reason: str


def _deterministic(stage: Callable[[Any], Any], samples: list[Any]) -> str | None:
    """None when `stage` neither draws from a global RNG nor differs between two runs, else why."""
    rng = draws_randomness(stage, samples)
    if rng:
        return f"it draws from the {rng} RNG"
    for raw in samples:
        if not same_sample(stage(raw), stage(raw)):
            return "two runs on one sample differ"
    return None


def plan_cache(pipeline: Pipeline, samples: list[Any], allow_untracked: bool = False) -> CachePlan | str:
    """Run each stage on `samples` (twice each, RNG states watched); a plan, or the reason nothing
    can be cached."""
    decode = pipeline.decode or (lambda x: x)
    with recording_reads() as reads:
        random_decode = _deterministic(decode, samples)
    if reads.untracked and not allow_untracked:
        return (
            f"decode reaches data accel cannot check for changes ({', '.join(sorted(reads.untracked))}); "
            "a changed remote object would be served stale (opt in with allow_untracked: true)"
        )
    if random_decode:
        return f"decode is random ({random_decode}); caching it would freeze one draw"
    if pipeline.transform is None:
        return CachePlan(("decode",), "decode is deterministic")
    decoded = [decode(raw) for raw in samples]
    random_transform = _deterministic(pipeline.transform, decoded)
    if random_transform:
        if pipeline.decode is None:
            return f"the transform is random ({random_transform}) and there is no decode stage to cache"
        return CachePlan(("decode",), f"the transform is random ({random_transform}): caching decode only")
    if pipeline.decode is None:
        return CachePlan(("transform",), "the transform is deterministic")
    return CachePlan(("decode", "transform"), "decode and transform are deterministic")


# --- the cached stage ------------------------------------------------------------------------------
class CachedStage:
    """Replaces the cached stages: look the raw sample up, else compute and store it."""

    def __init__(
        self,
        store: DecodedStore,
        namespace: str,
        stages: tuple[Callable[[Any], Any], ...],
        allow_untracked: bool = False,
    ) -> None:
        self.store = store
        self.namespace = namespace
        self.stages = stages
        self.allow_untracked = allow_untracked
        self.hits = 0
        self.misses = 0
        self.uncacheable = 0
        self.stale = 0  # hits refused because a file decode read has changed since
        self.tracked_files: set[str] = set()

    def compute(self, raw: Any) -> Any:
        value = raw
        for stage in self.stages:
            value = stage(value)
        return value

    def __call__(self, raw: Any) -> Any:
        content = content_digest(raw)
        if content is None:
            self.misses += 1
            return self.compute(raw)
        key = digest(self.namespace.encode(), content.encode())
        found = self.store.get_with_reads(key)
        if found is not None:
            if changed_file(found[1]) is None:
                self.hits += 1
                return found[0]
            self.stale += 1
        self.misses += 1
        with recording_reads() as reads:
            value = self.compute(raw)
        if reads.untracked and not self.allow_untracked:
            self.uncacheable += 1  # reached data that cannot be checked: served, not stored
            return value
        facts = file_facts(reads.paths, exclude=self.store.root)
        self.tracked_files.update(f["path"] for f in facts)
        try:
            self.store.put(key, value, facts)
        except CacheError:
            self.uncacheable += 1  # e.g. one sample with a non-tensor part: served, not stored
        return value


def _probe_samples(pipeline: Pipeline) -> list[Any]:
    if pipeline.is_sequence:
        return [pipeline.source[i] for i in range(min(DETERMINISM_PROBE_SAMPLES, len(pipeline.source)))]
    return []


def _stage_functions(pipeline: Pipeline, plan: CachePlan) -> tuple[Callable[[Any], Any], ...]:
    """The functions the plan caches, in order; the plan names only stages the pipeline has."""
    functions = {"decode": pipeline.decode, "transform": pipeline.transform}
    found = tuple(functions[name] for name in plan.stages)
    stages = tuple(f for f in found if f is not None)
    if len(stages) < len(found):
        raise CacheError(f"the pipeline has no {' or '.join(plan.stages)} stage to cache", "give it a decode function")
    return stages


def cached_pipeline(pipeline: Pipeline, config: CacheDecodedConfig, plan: CachePlan) -> tuple[Pipeline, CachedStage]:
    stages = _stage_functions(pipeline, plan)
    namespace = code_digest(*stages)[:16] + "-" + digest(__version__.encode(), "+".join(plan.stages).encode())[:8]
    root = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    meta = {
        "stages": list(plan.stages),
        "accel_version": __version__,
        "pipeline": pipeline.name,
        "functions": [getattr(f, "__qualname__", type(f).__name__) for f in stages],
    }
    store = DecodedStore(root, namespace, max_bytes=config.max_bytes, meta=meta)
    stage = CachedStage(store, namespace, stages, allow_untracked=config.allow_untracked)
    transform = None if "transform" in plan.stages else pipeline.transform
    return pipeline.replace(decode=stage, transform=transform), stage


def per_sample_seconds(prepare: Callable[[Any], Any], samples: list[Any]) -> float:
    start = now()
    for raw in samples:
        prepare(raw)
    return (now() - start) / max(len(samples), 1)


@register
class CacheDecoded(Optimizer):
    name = "cache.decoded"
    cures = ("data_loading", "input_decoding", "straggler")
    description = "Store decoded (and deterministically transformed) samples on disk, memory-mapped; decode once."
    Config = CacheDecodedConfig
    slot: ClassVar[str] = "data.stage_cache"

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        if not pipeline.has_source:
            return "the pipeline has no source of raw samples to cache"
        if pipeline.decode is None and pipeline.transform is None:
            return "the pipeline has no decode or transform stage to cache"
        if isinstance(pipeline.decode, CachedStage):
            return "the pipeline's decode is already cached"
        samples = _probe_samples(pipeline)
        raw = samples[0] if samples else None
        if raw is None:
            return "the source is a stream (not a sequence): there is no second pass to serve from the cache"
        if content_digest(raw) is None:
            return (
                f"raw samples of type {type(raw).__name__} cannot be content-hashed, so a changed sample could not miss"
            )
        try:
            # Untracked sources are judged in apply(), which sees whether the config opts in.
            plan = plan_cache(pipeline, samples, allow_untracked=True)
            if isinstance(plan, str):
                return plan
            from accel.optimizing.optimizers._store import flatten_sample

            stages = _stage_functions(pipeline, plan)
            value = raw
            for stage in stages:
                value = stage(value)
            flatten_sample(value)
            code_digest(*stages)
        except CacheError as exc:
            return exc.message
        return None

    def apply(self, pipeline: Pipeline, config: CacheDecodedConfig, context: Context) -> Applied:
        plan = plan_cache(pipeline, _probe_samples(pipeline), config.allow_untracked)
        if isinstance(plan, str):
            if "allow_untracked" in plan:
                raise CacheError(
                    f"cache.decoded refused: {plan}", "pass params: {allow_untracked: true} to cache anyway"
                )
            # applicable() passed, but a second look finds randomness
            return Applied(pipeline, state={}, notes={"cached": False, "reason": plan})
        cached, stage = cached_pipeline(pipeline, config, plan)
        probe = [pipeline.source[i] for i in range(min(COST_PROBE_SAMPLES, len(pipeline.source)))]
        before = per_sample_seconds(pipeline.prepare, probe)
        start = now()
        if config.prebuild:
            for index in range(len(pipeline.source)):
                stage(pipeline.source[index])
        build_seconds = now() - start
        built, reused = stage.misses, stage.hits
        cached.prepare(probe[0])  # the first read pays for opening the store
        after = per_sample_seconds(cached.prepare, probe)
        notes = {
            "stages_cached": list(plan.stages),
            "plan": plan.reason,
            "build_seconds": build_seconds,
            "records_built": built,
            "records_reused": reused,
            "samples_not_storable": stage.uncacheable,
            "files_tracked": len(stage.tracked_files),
            "prepare_seconds_per_sample_before": before,
            "prepare_seconds_per_sample_after": after,
            "steady_state_prepare_speedup": before / after if after > 0 else float("inf"),
            "cache_dir": str(stage.store.root),
            "namespace": stage.namespace,
        }
        state = {"stages": list(plan.stages), "namespace": stage.namespace}
        return Applied(cached, state=state, setup_seconds=build_seconds, notes=notes)

    def restore(
        self, pipeline: Pipeline, config: CacheDecodedConfig, state: dict[str, Any], lock_dir: Path
    ) -> Pipeline:
        """Wrap the stages the lock names; records are filled lazily, on first use in production.
        An edited function hashes to a new namespace, so it starts empty rather than stale."""
        if not state.get("stages"):
            return pipeline
        if config.cache_dir is not None:  # a lock chooses no folder for accel to write in
            resolve_lock_folder(config.cache_dir, "params.cache_dir", (cache_root(), Path(lock_dir)))
        stages = tuple(state["stages"])
        if not all(stage in ("decode", "transform") for stage in stages):
            raise LockError(f"the lock's cache.decoded state.stages is {state['stages']!r}", "run accel optimize again")
        plan = CachePlan(stages, "from the lock")
        return cached_pipeline(pipeline, config, plan)[0]
