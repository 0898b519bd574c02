"""The lock a search writes: one builder for both optimize paths (a pipeline's recipe engine, a
script's DataLoader search), each handing over its result as a `Searched`."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from accel.core.pipeline import Pipeline
from accel.optimizing.decision import KeepTest
from accel.optimizing.lock import Lock, LockEntry, artifact_digests, file_sha256, weights_sha256
from accel.optimizing.runtimes import current_versions


class Searched(Protocol):
    """What a search kept, as its lock records it: the recipe engine's EngineResult and the script
    search's ScriptOptimizeResult both are one."""

    @property
    def recipe(self) -> str: ...

    @property
    def keep(self) -> KeepTest: ...

    @property
    def speedup(self) -> float: ...

    @property
    def lock_kind(self) -> str: ...

    def lock_entries(self) -> tuple[LockEntry, ...]: ...


def build_lock(file: Path, searched: Searched, *, pipeline: Pipeline | None = None, folder: Path | None = None) -> Lock:
    """The lock of a search over `file`. `pipeline`: what the file loads (its weights are digested);
    `folder`: where the entries' artifacts are (digested). The keep test and the versions of the
    runtimes the entries depend on are recorded, for `accel verify` and for loading."""
    entries = searched.lock_entries()
    keep = searched.keep
    return Lock(
        pipeline_file=file.name,
        pipeline_sha256=file_sha256(file),
        pipeline_path=str(file.resolve()),
        weights_sha256=weights_sha256(pipeline) if pipeline is not None else None,
        artifacts=artifact_digests(folder, entries) if folder is not None else {},
        entries=entries,
        recipe=searched.recipe,
        target=keep.target,
        speedup=round(searched.speedup, 4),
        versions=current_versions(entries),
        min_speedup=keep.min_speedup,
        min_memory_saving=keep.min_memory_saving,
        max_slowdown=keep.max_slowdown,
        kind=searched.lock_kind,
    )
