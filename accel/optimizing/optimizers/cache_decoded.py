"""`cache.decoded`: keep decoded (and deterministically transformed) samples on disk.

The first pass decodes and stores every sample (the one-time build cost); later passes read the
memory-mapped record instead of decoding. The key covers the raw sample's content and a fingerprint
of the cached code (its bytecode, constants, defaults, closure values and the globals it reads,
recursively through helper functions), so editing a sample or the function misses; see accel/cache.py
for the store.

Random augmentation must not be cached. Before caching, each stage runs twice on the first sample:
if decode differs the cache refuses; if only the transform differs, the cache keeps decode only and
the transform still runs on every pass (cache up to the last deterministic stage).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from accel._version import __version__
from accel.core.errors import CacheError
from accel.core.hashing import content_digest, digest
from accel.core.measure import now
from accel.core.pipeline import Pipeline
from accel.optimizing.optimizers import Applied, Context, Optimizer, register
from accel.optimizing.optimizers._store import DecodedStore, default_cache_dir

DEFAULT_MAX_BYTES = 4 << 30
# Samples timed to estimate the per-sample cost before and after caching.
COST_PROBE_SAMPLES = 8
_MAX_FINGERPRINT_DEPTH = 6


@dataclasses.dataclass(frozen=True)
class CacheDecodedConfig:
    cache_dir: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    prebuild: bool = True

    def __post_init__(self) -> None:
        if self.max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {self.max_bytes}")


# --- fingerprints of code --------------------------------------------------------------------------
class CodeFingerprint:
    """A hash of what a callable computes: bytecode, constants, closures and the globals it reads."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.seen: set[int] = set()

    def feed(self, obj: Any, depth: int = 0) -> None:
        if depth > _MAX_FINGERPRINT_DEPTH:
            self._add("deep", type(obj).__qualname__)
            return
        if id(obj) in self.seen and not isinstance(obj, (int, float, str, bytes, bool, type(None))):
            self._add("seen", type(obj).__qualname__)
            return
        self.seen.add(id(obj))
        if isinstance(obj, types.FunctionType):
            self._function(obj, depth)
        elif isinstance(obj, types.MethodType):
            self.feed(obj.__func__, depth + 1)
            self._state(obj.__self__, depth + 1)
        elif isinstance(obj, functools.partial):
            self.feed(obj.func, depth + 1)
            self._value(obj.args, depth + 1)
            self._value(obj.keywords, depth + 1)
        elif isinstance(obj, (types.BuiltinFunctionType, type)):
            self._add("named", getattr(obj, "__module__", None) or "", obj.__qualname__)
        elif callable(obj):
            self.feed(type(obj).__call__, depth + 1)
            self._state(obj, depth + 1)
        else:
            self._value(obj, depth + 1)

    def hexdigest(self) -> str:
        return self.hash.hexdigest()

    def _add(self, *parts: Any) -> None:
        self.hash.update(repr(parts).encode())

    def _function(self, fn: types.FunctionType, depth: int) -> None:
        self._add("function", _module_label(fn.__module__), fn.__qualname__)
        self._code(fn.__code__)
        self._value(fn.__defaults__, depth + 1)
        self._value(fn.__kwdefaults__, depth + 1)
        for cell in fn.__closure__ or ():
            try:
                self._value(cell.cell_contents, depth + 1)
            except ValueError:  # an empty cell
                self._add("empty-cell")
        for name in sorted(_global_names(fn.__code__)):
            if name in fn.__globals__:
                self._add("global", name)
                self._value(fn.__globals__[name], depth + 1)

    def _code(self, code: types.CodeType) -> None:
        self.hash.update(code.co_code)
        self._add(code.co_names, code.co_varnames)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                self._code(const)
            else:
                self._add("const", const)

    def _value(self, value: Any, depth: int) -> None:
        if isinstance(value, types.ModuleType):
            self._add("module", value.__name__, getattr(value, "__version__", ""))
        elif isinstance(value, (types.FunctionType, types.MethodType, functools.partial)):
            self.feed(value, depth)
        elif isinstance(value, type):
            self._add("class", _module_label(value.__module__), value.__qualname__)
            if _is_user_module(value.__module__):  # a class from the user's own code: hash its methods too
                for name, member in sorted(vars(value).items()):
                    if isinstance(member, (types.FunctionType, staticmethod, classmethod)):
                        self._add("method", name)
                        self.feed(getattr(member, "__func__", member), depth + 1)
        elif isinstance(value, torch.nn.Module):
            self._add("module-object", type(value).__qualname__, repr(value))
            for name, tensor in value.state_dict().items():
                self._add("param", name, content_digest(tensor))
        else:
            content = content_digest(value)
            if content is not None:
                self._add("value", content)
            elif isinstance(value, Mapping) or isinstance(value, (list, tuple)):
                for item in value.items() if isinstance(value, Mapping) else value:
                    self._value(item, depth + 1)
            elif callable(value):
                self.feed(value, depth)
            else:
                self._state(value, depth)

    def _state(self, obj: Any, depth: int) -> None:
        self._add("object", _module_label(type(obj).__module__), type(obj).__qualname__)
        state = getattr(obj, "__dict__", None)
        if state is None:
            text = repr(obj)
            if " at 0x" in text:
                raise CacheError(
                    f"cannot fingerprint a {type(obj).__name__} the cached code uses",
                    "use plain functions, constants and tensors in decode/transform",
                )
            self._add("repr", text)
            return
        for name in sorted(state):
            self._add("attribute", name)
            self._value(state[name], depth + 1)


def _module_label(name: str | None) -> str:
    """A module's file name: a pipeline file loaded twice gets two module names but one file."""
    module = sys.modules.get(name or "")
    file = getattr(module, "__file__", None)
    return Path(file).name if file else (name or "")


def _is_user_module(name: str | None) -> bool:
    file = getattr(sys.modules.get(name or ""), "__file__", None) or ""
    return (
        bool(file)
        and "site-packages" not in file
        and not file.startswith(sys.prefix)
        and not file.startswith(sys.base_prefix)
    )


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def code_digest(*stages: Callable[..., Any]) -> str:
    fingerprint = CodeFingerprint()
    for stage in stages:
        fingerprint.feed(stage)
    return fingerprint.hexdigest()


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


def plan_cache(pipeline: Pipeline, raw: Any) -> CachePlan | str:
    """Run each stage twice on `raw`; a plan, or the reason nothing can be cached."""
    decode = pipeline.decode or (lambda x: x)
    first, second = decode(raw), decode(raw)
    if not same_sample(first, second):
        return "decode gives different results for the same sample (random?); caching it would freeze one draw"
    if pipeline.transform is None:
        return CachePlan(("decode",), "decode is deterministic")
    if not same_sample(pipeline.transform(first), pipeline.transform(first)):
        if pipeline.decode is None:
            return "the transform is random (two runs on one sample differ) and there is no decode stage to cache"
        return CachePlan(("decode",), "the transform is random (two runs on one sample differ): caching decode only")
    if pipeline.decode is None:
        return CachePlan(("transform",), "the transform is deterministic")
    return CachePlan(("decode", "transform"), "decode and transform are deterministic")


# --- the cached stage ------------------------------------------------------------------------------
class CachedStage:
    """Replaces the cached stages: look the raw sample up, else compute and store it."""

    def __init__(self, store: DecodedStore, namespace: str, stages: tuple[Callable[[Any], Any], ...]) -> None:
        self.store = store
        self.namespace = namespace
        self.stages = stages
        self.hits = 0
        self.misses = 0
        self.uncacheable = 0

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
        cached = self.store.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        value = self.compute(raw)
        try:
            self.store.put(key, value)
        except CacheError:
            self.uncacheable += 1  # e.g. one sample with a non-tensor part: served, not stored
        return value


def _first_raw(pipeline: Pipeline) -> Any:
    if pipeline.is_sequence:
        return pipeline.source[0] if len(pipeline.source) else None
    return None


def cached_pipeline(pipeline: Pipeline, config: CacheDecodedConfig, plan: CachePlan) -> tuple[Pipeline, CachedStage]:
    functions = {"decode": pipeline.decode, "transform": pipeline.transform}
    stages = tuple(functions[name] for name in plan.stages)
    namespace = code_digest(*stages)[:16] + "-" + digest(__version__.encode(), "+".join(plan.stages).encode())[:8]
    root = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    meta = {
        "stages": list(plan.stages),
        "accel_version": __version__,
        "pipeline": pipeline.name,
        "functions": [getattr(f, "__qualname__", type(f).__name__) for f in stages],
    }
    stage = CachedStage(DecodedStore(root, namespace, max_bytes=config.max_bytes, meta=meta), namespace, stages)
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
    description = "Store decoded (and deterministically transformed) samples on disk, memory-mapped; decode once."
    target = "throughput"
    Config = CacheDecodedConfig
    slot: ClassVar[str] = "data.stage_cache"

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        if not pipeline.has_source:
            return "the pipeline has no source of raw samples to cache"
        if pipeline.decode is None and pipeline.transform is None:
            return "the pipeline has no decode or transform stage to cache"
        if isinstance(pipeline.decode, CachedStage):
            return "the pipeline's decode is already cached"
        raw = _first_raw(pipeline)
        if raw is None:
            return "the source is a stream (not a sequence): there is no second pass to serve from the cache"
        if content_digest(raw) is None:
            return (
                f"raw samples of type {type(raw).__name__} cannot be content-hashed, so a changed sample could not miss"
            )
        try:
            plan = plan_cache(pipeline, raw)
            if isinstance(plan, str):
                return plan
            functions = {"decode": pipeline.decode, "transform": pipeline.transform}
            from accel.optimizing.optimizers._store import flatten_sample

            value = raw
            for name in plan.stages:
                value = functions[name](value)
            flatten_sample(value)
            code_digest(*(functions[name] for name in plan.stages))
        except CacheError as exc:
            return exc.message
        return None

    def apply(self, pipeline: Pipeline, config: CacheDecodedConfig, context: Context) -> Applied:
        plan = plan_cache(pipeline, _first_raw(pipeline))
        if isinstance(plan, str):  # applicable() passed, but a second look finds randomness
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
        stages = tuple(state["stages"])
        plan = CachePlan(stages, "from the lock")
        return cached_pipeline(pipeline, config, plan)[0]
