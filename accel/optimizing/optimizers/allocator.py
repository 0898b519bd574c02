"""`runtime.allocator`: glibc malloc's thresholds pinned, so each call's freed memory is reused.

A CPU pipeline that frees its activations after every call can hand that memory back to the kernel
and fault it in again, zeroed, on the next call (accel.core.allocator): thousands of page faults a
call on a small CNN, about a microsecond each. Pinning the trim and mmap thresholds keeps the
memory in the process; the model, its weights and its outputs are untouched.

It applies where a fresh process running the plain pipeline (the worst of PROBES) takes enough
more faults a call than one with the thresholds pinned for their cost (measured on this machine)
to reach MIN_PREDICTED_SHARE of the call. Only the faults pinning removes count: a batch-1 MLP
takes 20-75 a call either way (its threads' and torch's own pages), and at 2.5 us a fault on a
virtual machine those alone came to 3% of its 8 ms call.
The setting holds for the whole process, so the engine times it in fresh processes
(accel.optimizing.fresh), never here, and nothing is applied to this process. The lock re-applies
it in production: restoring the entry calls mallopt in the process that loads the lock, from then
on (or set ENVIRONMENT in the serving process's environment, which glibc reads at start).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from accel.core import allocator
from accel.core.pipeline import Pipeline
from accel.optimizing.fresh import FreshTimer
from accel.optimizing.lock import LockEntry
from accel.optimizing.optimizers import Applied, Context, Optimizer, register

# The faults' predicted cost, as a share of the plain pipeline's call, below which it is not tried.
MIN_PREDICTED_SHARE = 0.03
# Fresh processes probed, the worst one counted: which state a process's malloc settles in is a
# matter of its history, and a ResNet that faults 1,500 times a call in most fresh processes took
# none in one of them (so can the production process, on another start).
PROBES = 2


@register
class Allocator(Optimizer):
    name = "runtime.allocator"
    description = (
        "glibc malloc's trim and mmap thresholds pinned, so each call's freed memory is reused instead of "
        "faulted in again from the kernel; timed in fresh processes (a process-wide setting)."
    )
    slot: ClassVar[str] = "allocator"
    # Holds for the whole process: timed in fresh processes, never applied to this one.
    process_wide: ClassVar[bool] = True

    def __init__(self) -> None:
        self._probed: dict[str, dict[str, Any]] = {}

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        version = allocator.glibc_version()
        if version is None:
            return "the C library is not glibc: its malloc has other settings"
        if context.machine.is_cuda:
            return "a CUDA pipeline: its tensors live in torch's caching allocator, not in malloc"
        if allocator.pinned_by_environment():
            return f"the environment already pins glibc's thresholds ({', '.join(allocator.ENVIRONMENT)})"
        if context.pipeline_path is None:
            return "the pipeline was built in memory: a process-wide setting is timed in fresh processes from a file"
        probe = self.probe(Path(context.pipeline_path), context)
        if probe["predicted_share"] < MIN_PREDICTED_SHARE:
            return (
                f"the worst of {PROBES} fresh processes takes {probe['faults_per_call']:.0f} page faults per call, "
                f"{probe['removed_per_call']:.0f} more than with the thresholds pinned: about "
                f"{probe['predicted_share']:.1%} of its {probe['median'] * 1e3:.2f} ms at "
                f"{probe['seconds_per_fault'] * 1e6:.2f} us each, below {MIN_PREDICTED_SHARE:.0%}"
            )
        return None

    def probe(self, path: Path, context: Context) -> dict[str, Any]:
        """The plain pipeline in PROBES fresh processes and the pinned one in one: the worst plain
        process's faults per call beyond the pinned one's, and their predicted cost (once per
        version of the file)."""
        stat = path.stat()
        key = f"{path.resolve()}:{stat.st_mtime_ns}:{stat.st_size}"
        if key not in self._probed:
            timer = FreshTimer(path, context.workdir / "accel.lock.yaml", "latency")
            cost = allocator.seconds_per_fault()
            worst = max((timer.run(()) for _ in range(PROBES)), key=lambda run: run["faults_per_call"])
            pinned = timer.run((LockEntry(self.name, {}, self.pinned_state()),))
            removed = max(worst["faults_per_call"] - pinned["faults_per_call"], 0.0)
            share = removed * cost / worst["median"] if worst["median"] > 0 else 0.0
            self._probed[key] = {
                **worst,
                "removed_per_call": removed,
                "seconds_per_fault": cost,
                "predicted_share": min(share, 1.0),
            }
        return self._probed[key]

    @staticmethod
    def pinned_state() -> dict[str, Any]:
        return {"trim_threshold": allocator.TRIM_THRESHOLD_BYTES, "mmap_threshold": allocator.MMAP_THRESHOLD_BYTES}

    def apply(self, pipeline: Pipeline, config: Any, context: Context) -> Applied:
        probe = self.probe(Path(context.pipeline_path), context) if context.pipeline_path else None
        notes: dict[str, Any] = {"environment": dict(allocator.ENVIRONMENT)}
        if probe is not None:
            notes["predicted_saving"] = round(probe["predicted_share"], 3)
        return Applied(
            pipeline=pipeline.replace(),
            state=self.pinned_state(),
            notes=notes,
        )

    def restore(self, pipeline: Pipeline, config: Any, state: dict[str, Any], lock_dir: Any) -> Pipeline:
        allocator.pin()  # not glibc: nothing to pin, the pipeline runs as it did
        return pipeline.replace()
