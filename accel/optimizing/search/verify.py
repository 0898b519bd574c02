"""`accel verify LOCK`: does what a lock kept still pay on this machine, with these versions?

Each kept optimization is re-applied alone to the plain pipeline and timed against it, then the
whole lock is, with the engine's own measurement (interleaved A/B, the same warm-up and rounds)
and its keep test: an optimization still pays when its speedup's whole 95% interval lies above
the threshold the lock was kept at (accel.optimizing.decision, with the thresholds the lock
recorded). The lock as a whole no longer pays when its interval does not.
This is the check to run after upgrading torch or ONNX Runtime, or on another CPU.

The lock must still describe the pipeline (the file, its weights, the artifacts): verifying an
optimization built from other weights would time the wrong model. Version changes are allowed
(that is what verify is for) and reported.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

import torch

from accel.core.errors import AccelError, LockError
from accel.core.loading import check_file, load_pipeline
from accel.core.measure import Comparison, device_sync, peak_memory_pair, thread_count
from accel.core.pipeline import Pipeline
from accel.optimizing.decision import KeepTest, decide
from accel.optimizing.fresh import FreshTimer
from accel.optimizing.lock import (
    SCRIPT_LOCK,
    Lock,
    LockEntry,
    apply_entries,
    changed_versions,
    check_lock,
    check_pipeline_file,
    lock_file,
    read_lock,
)
from accel.optimizing.optimizers import process_wide_among
from accel.optimizing.recipes.schema import DEFAULT_MAX_SLOWDOWN, DEFAULT_MIN_MEMORY_SAVING, DEFAULT_MIN_SPEEDUP
from accel.optimizing.search.measuring import Measurer, compare_pipelines

VERIFY_SCHEMA = "accel.verify/1"
DEFAULT_VERIFY_SECONDS = 30.0
WHOLE_LOCK = "(the whole lock)"

Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Recheck:
    """Whether one kept optimization (or the whole lock) still pays here."""

    optimizer: str
    pays: bool
    reason: str
    speedup: float | None = None
    speedup_ci: tuple[float, float] | None = None
    memory_ratio: float | None = None


@dataclasses.dataclass(frozen=True)
class Verification:
    lock_path: str
    pipeline_path: str
    target: str
    threads: int
    min_speedup: float
    recorded_speedup: float | None
    changed_versions: tuple[str, ...]
    entries: tuple[Recheck, ...]
    whole: Recheck

    @property
    def still_pays(self) -> bool:
        return self.whole.pays

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["schema"] = VERIFY_SCHEMA
        data["still_pays"] = self.still_pays
        return data


def find_pipeline_file(lock: Lock, target: Path, given: str | os.PathLike | None) -> Path:
    """The pipeline file: the one given, else the file of the lock's recorded name (its name only:
    a lock is data that travels, and never points accel at a file to run) beside the lock, or
    beside the lock's folder (`accel optimize FILE --out DIR`); refused before it runs unless it
    is the file the lock was written for (its sha256)."""
    name = Path(lock.pipeline_file).name
    if given is not None:
        candidates = [check_file(given)]  # a --pipeline that is not there is named as such
    else:
        candidates = [target.parent / name, target.parent.parent / name] if name else []
    for path in candidates:
        if path.is_file():
            check_pipeline_file(lock, target, path)
            return path
    raise LockError(
        f"cannot find the pipeline file {lock.pipeline_file!r} that {target} was written for beside it",
        "pass it: accel verify LOCK --pipeline FILE",
    )


def verify_lock(
    lock_path: str | os.PathLike,
    pipeline_path: str | os.PathLike | None = None,
    *,
    budget_seconds: float = DEFAULT_VERIFY_SECONDS,
    threads: int | None = None,
    progress: Progress = lambda message: None,
) -> Verification:
    """Re-time each optimization the lock kept, and the whole lock, against the plain pipeline."""
    target = lock_file(Path(lock_path))
    lock = read_lock(target)
    if lock.kind == SCRIPT_LOCK:
        raise LockError(
            f"{target} holds a script's DataLoader settings: accel verify re-times pipeline locks only",
            f"re-time the script's settings with accel optimize {lock.pipeline_file} again",
        )
    file = find_pipeline_file(lock, target, pipeline_path)
    plain = load_pipeline(file)
    check_lock(lock, target, plain, file, versions=False)
    test = keep_test(lock)
    with thread_count(threads):
        measurer = Measurer(plain, test.target, device_sync(None))
        # A process-wide setting (malloc's thresholds) is timed in fresh processes, never applied here.
        retimer = _Retimer(
            plain,
            target,
            measurer,
            FreshTimer(file, target, measurer.target),
            test,
            budget_seconds / (len(lock.entries) + 1),
        )
        rechecks = []
        if len(lock.entries) > 1:  # one entry alone is the whole lock: timed once, below
            for entry in lock.entries:
                progress(f"timing {entry.optimizer} alone")
                rechecks.append(retimer.time(entry.optimizer, (entry,)))
        progress("timing the whole lock")
        whole = (
            retimer.time(WHOLE_LOCK, lock.entries)
            if lock.entries
            else Recheck("(empty lock)", True, "the lock keeps nothing: nothing to verify")
        )
        if len(lock.entries) == 1:
            rechecks.append(dataclasses.replace(whole, optimizer=lock.entries[0].optimizer))
        threads_used = torch.get_num_threads()
    return Verification(
        lock_path=str(target),
        pipeline_path=str(file),
        target=measurer.target,
        threads=threads_used,
        min_speedup=test.min_speedup,
        recorded_speedup=lock.speedup,
        changed_versions=tuple(changed_versions(lock)),
        entries=tuple(rechecks),
        whole=whole,
    )


def keep_test(lock: Lock) -> KeepTest:
    """The keep test the lock's optimizations were kept by: the thresholds it recorded (the
    defaults for what an older lock did not record)."""
    return KeepTest(
        target=lock.target or "latency",
        min_speedup=float(lock.min_speedup or DEFAULT_MIN_SPEEDUP),
        min_memory_saving=float(
            lock.min_memory_saving if lock.min_memory_saving is not None else DEFAULT_MIN_MEMORY_SAVING
        ),
        max_slowdown=float(lock.max_slowdown or DEFAULT_MAX_SLOWDOWN),
    )


@dataclasses.dataclass(frozen=True)
class _Retimer:
    """Times lock entries re-applied to the plain pipeline against it, and holds them to the lock's
    keep test."""

    plain: Pipeline
    lock_target: Path
    measurer: Measurer
    fresh: FreshTimer
    test: KeepTest
    budget_seconds: float

    def time(self, name: str, entries: tuple[LockEntry, ...]) -> Recheck:
        try:
            if process_wide_among(e.optimizer for e in entries):
                return self.recheck(name, self.fresh.compare((), entries, self.budget_seconds).comparison, None)
            candidate = apply_entries(self.plain, entries, self.lock_target)
            comparison = compare_pipelines(self.measurer, self.plain, candidate, self.budget_seconds)
            memory_ratio = None
            if self.test.target == "memory":
                call = self.measurer.call
                base_peak, peak = peak_memory_pair(call(self.plain), call(candidate))
                memory_ratio = peak / base_peak if base_peak > 0 else 1.0
        except LockError:  # the lock is broken (exit 2), not an optimization that stopped paying
            raise
        except AccelError as exc:
            return Recheck(name, False, f"cannot be re-applied here: {exc.message}")
        except Exception as exc:  # noqa: BLE001 - an optimization that breaks here no longer pays
            return Recheck(name, False, f"cannot be re-applied here: {type(exc).__name__}: {str(exc)[:120]}")
        return self.recheck(name, comparison, memory_ratio)

    def recheck(self, name: str, comparison: Comparison, memory_ratio: float | None) -> Recheck:
        return recheck(name, self.test, comparison, memory_ratio)


def recheck(name: str, test: KeepTest, comparison: Comparison, memory_ratio: float | None) -> Recheck:
    """Whether an optimization timed here still passes the lock's keep test (accel.optimizing.decision)."""
    # Without a memory reading (a process-wide setting, timed in fresh processes) speed decides.
    held_to = test if memory_ratio is not None else dataclasses.replace(test, target="latency")
    decision = decide(held_to, comparison.speedup, comparison.speedup_ci, memory_ratio=memory_ratio)
    why = decision.describe(against="the plain pipeline")
    reason = f"still pays: {why}" if decision.kept else f"no longer pays: {why}"
    return Recheck(name, decision.kept, reason, comparison.speedup, decision.speedup_ci, memory_ratio)
