"""`accel verify LOCK`: does what a lock kept still pay on this machine, with these versions?

Each kept optimization is re-applied alone to the plain pipeline and timed against it, then the
whole lock is, with the engine's own measurement (interleaved A/B, the same warm-up and rounds)
and its keep test: an optimization still pays when its speedup's whole 95% interval lies above
the threshold the lock was kept at. The lock as a whole no longer pays when its interval does not.
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
from accel.core.loading import load_pipeline
from accel.core.measure import Comparison, device_sync, peak_memory_pair, thread_count
from accel.core.pipeline import Pipeline
from accel.optimizing.fresh import FreshTimer
from accel.optimizing.lock import (
    SCRIPT_LOCK,
    Lock,
    LockEntry,
    apply_entries,
    changed_versions,
    check_lock,
    lock_file,
    read_lock,
)
from accel.optimizing.optimizers import process_wide_among
from accel.optimizing.recipes.measuring import Measurer, compare_pipelines
from accel.optimizing.recipes.schema import DEFAULT_MIN_MEMORY_SAVING, DEFAULT_MIN_SPEEDUP

VERIFY_SCHEMA = "accel.verify/1"
DEFAULT_VERIFY_SECONDS = 30.0
WHOLE_LOCK = "(the whole lock)"

Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Verdict:
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
    entries: tuple[Verdict, ...]
    whole: Verdict

    @property
    def still_pays(self) -> bool:
        return self.whole.pays

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["schema"] = VERIFY_SCHEMA
        data["still_pays"] = self.still_pays
        return data


def find_pipeline_file(lock: Lock, target: Path, given: str | os.PathLike | None) -> Path:
    """The pipeline file: the one given, else where the lock was written from, else beside the lock."""
    if given is not None:
        candidates = [Path(given)]
    else:
        candidates = [Path(p) for p in (lock.pipeline_path, target.parent / lock.pipeline_file) if str(p)]
        candidates.append(Path.cwd() / lock.pipeline_file)
    for path in candidates:
        if path.is_file():
            return path
    raise LockError(
        f"cannot find the pipeline file {lock.pipeline_file} that {target} was written for",
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
    min_speedup = float(lock.min_speedup or DEFAULT_MIN_SPEEDUP)
    objective = lock.target or "latency"
    with thread_count(threads):
        measurer = Measurer(plain, objective, device_sync(None))
        # A process-wide setting (malloc's thresholds) is timed in fresh processes, never applied here.
        fresh = FreshTimer(file, target, measurer.target)
        share = budget_seconds / (len(lock.entries) + 1)
        verdicts = []
        if len(lock.entries) > 1:  # one entry alone is the whole lock: timed once, below
            for entry in lock.entries:
                progress(f"timing {entry.optimizer} alone")

                def alone(entry: LockEntry = entry) -> Pipeline:
                    return apply_entries(plain, (entry,), target)

                verdicts.append(
                    _time(entry.optimizer, alone, plain, measurer, share, min_speedup, objective, fresh, (entry,))
                )
        progress("timing the whole lock")
        name = WHOLE_LOCK if lock.entries else "(empty lock)"
        whole = (
            _time(
                name,
                lambda: apply_entries(plain, lock.entries, target),
                plain,
                measurer,
                share,
                min_speedup,
                objective,
                fresh,
                lock.entries,
            )
            if lock.entries
            else Verdict(name, True, "the lock keeps nothing: nothing to verify")
        )
        if len(lock.entries) == 1:
            verdicts.append(dataclasses.replace(whole, optimizer=lock.entries[0].optimizer))
        threads_used = torch.get_num_threads()
    return Verification(
        lock_path=str(target),
        pipeline_path=str(file),
        target=measurer.target,
        threads=threads_used,
        min_speedup=min_speedup,
        recorded_speedup=lock.speedup,
        changed_versions=tuple(changed_versions(lock)),
        entries=tuple(verdicts),
        whole=whole,
    )


def _time(
    name: str,
    build: Callable[[], Pipeline],
    plain: Pipeline,
    measurer: Measurer,
    budget_seconds: float,
    min_speedup: float,
    objective: str,
    fresh: FreshTimer,
    entries: tuple[LockEntry, ...],
) -> Verdict:
    try:
        if process_wide_among(e.optimizer for e in entries):
            return _verdict(name, fresh.compare((), entries, budget_seconds).comparison, None, min_speedup)
        candidate = build()
        comparison = compare_pipelines(measurer, plain, candidate, budget_seconds)
        memory_ratio = None
        if objective == "memory":
            base_peak, peak = peak_memory_pair(measurer.call(plain), measurer.call(candidate))
            memory_ratio = peak / base_peak if base_peak > 0 else 1.0
    except AccelError as exc:
        return Verdict(name, False, f"cannot be re-applied here: {exc.message}")
    except Exception as exc:  # noqa: BLE001 - an optimization that breaks here no longer pays
        return Verdict(name, False, f"cannot be re-applied here: {type(exc).__name__}: {str(exc)[:120]}")
    return _verdict(name, comparison, memory_ratio, min_speedup)


def _verdict(name: str, comparison: Comparison, memory_ratio: float | None, min_speedup: float) -> Verdict:
    low, high = comparison.speedup_ci
    if memory_ratio is not None:
        pays = memory_ratio <= 1 - DEFAULT_MIN_MEMORY_SAVING
        why = f"peak memory x{memory_ratio:.2f}" + ("" if pays else f", needs x{1 - DEFAULT_MIN_MEMORY_SAVING:.2f}")
        reason = ("still pays: " if pays else "no longer pays: ") + why
    elif comparison.faster_beyond(min_speedup):
        pays, reason = True, f"still pays: interval above {min_speedup}x"
    elif high < 1.0:
        pays, reason = False, "no longer pays: slower than the plain pipeline"
    else:
        pays = False
        reason = f"no longer pays: not faster beyond noise (interval reaches {low:.2f}x, needs > {min_speedup}x)"
    return Verdict(name, pays, reason, comparison.speedup, (low, high), memory_ratio)
