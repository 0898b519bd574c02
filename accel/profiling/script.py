"""Script mode: profile a plain training or inference script, with no change to it.

The file runs as `__main__` (runpy) with the arguments given after `--`, under torch.profiler
when a trace is asked for. For the duration of the run accel wraps the DataLoader iterator's
`__next__` (restored afterwards) and times every call: the time inside `__next__` is the time the
script waits for data, the time between calls is the training step. This is measured at the
iterator, not guessed from gaps in the trace: TensorBoard's profiler plugin puts a loader-bound CPU
script's wait under "Other".

With workers, the first `__next__` of each iterator waits for the worker processes to start; that
is reported apart as start-up and left out of the steady-state time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import runpy
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch.utils.data.dataloader import _BaseDataLoaderIter

from accel.core.errors import PipelineError
from accel.core.loading import Script, user_code_context
from accel.core.measure import Clock, now
from accel.core.pipeline import batch_length
from accel.core.watchdog import children_reaped
from accel.profiling.data import EndToEnd, ProfileData, StageTiming
from accel.profiling.trace import record_steps

# The trace keeps this many batches (a profiler step each); a long run would fill memory.
MAX_TRACED_STEPS = 200
# A loop the budget stopped before this many batches says too little to decide from: one loader call
# and no step between two. The report abstains (a note names the budget that would do).
MIN_MEASURED_BATCHES = 4
# The budget suggested then is long enough for this many batches at the rate measured.
SUGGESTED_BATCHES = 20
# How the note begins that stands for a finding when the budget stopped the loop too early.
TOO_FEW_STEPS = "too few steps"


@dataclasses.dataclass(frozen=True)
class LoaderCall:
    """One call of a DataLoader iterator's __next__."""

    start_seconds: float
    end_seconds: float
    samples: int
    num_workers: int
    first_of_iterator: bool
    exhausted: bool = False

    @property
    def seconds(self) -> float:
        return self.end_seconds - self.start_seconds

    @property
    def is_startup(self) -> bool:
        return self.first_of_iterator and self.num_workers > 0


class BudgetReached(BaseException):
    """Raised at a batch request once the measuring budget is spent, to end the script's loop early.

    A BaseException, so that a script's own `except Exception` does not swallow it.
    """


@contextlib.contextmanager
def timed_loader_iteration(
    calls: list[LoaderCall],
    clock: Clock = now,
    on_call: Callable[[], None] = lambda: None,
    deadline: float | None = None,
    max_batches: int | None = None,
    loop_seconds: float | None = None,
    on_batch: Callable[[Any, Any], None] | None = None,
) -> Iterator[None]:
    """Record every DataLoader __next__ call into `calls` while the block runs; restore after.

    With `deadline` (a `clock()` value), the first batch request after it raises BudgetReached;
    with `max_batches`, the request after that many batches does, and with `loop_seconds` the first
    request that many seconds after the first one (the script's set-up before its loop not counted).
    `on_batch(iterator, batch)` sees each batch after it is timed (accel optimize digests a few).
    """
    original = _BaseDataLoaderIter.__next__
    batches = 0
    loop_deadline: float | None = None

    def timed_next(iterator: Any) -> Any:
        nonlocal batches, loop_deadline
        if deadline is not None and calls and clock() > deadline:
            raise BudgetReached()
        if max_batches is not None and batches >= max_batches:
            raise BudgetReached()
        if loop_seconds is not None:
            if loop_deadline is None:
                loop_deadline = clock() + loop_seconds
            elif clock() > loop_deadline:
                raise BudgetReached()
        on_call()
        first = iterator._num_yielded == 0
        t0 = clock()
        try:
            batch = original(iterator)
        except StopIteration:
            calls.append(LoaderCall(t0, clock(), 0, iterator._num_workers, first, exhausted=True))
            raise
        calls.append(LoaderCall(t0, clock(), batch_length(batch), iterator._num_workers, first))
        batches += 1
        if on_batch is not None:
            on_batch(iterator, batch)
        return batch

    setattr(_BaseDataLoaderIter, "__next__", timed_next)
    try:
        yield
    finally:
        setattr(_BaseDataLoaderIter, "__next__", original)


def end_to_end_from_calls(calls: list[LoaderCall]) -> EndToEnd | None:
    """The loop from the first __next__ to the last: waits inside, steps between, start-up apart."""
    if not any(c.samples for c in calls):
        return None
    window = calls[-1].end_seconds - calls[0].start_seconds
    startup = sum(c.seconds for c in calls if c.is_startup)
    wait = sum(c.seconds for c in calls if not c.is_startup)
    seconds = max(window - startup, wait)
    steps = [b.start_seconds - a.end_seconds for a, b in zip(calls, calls[1:]) if not a.exhausted]
    return EndToEnd(
        seconds=seconds,
        samples=sum(c.samples for c in calls),
        batches=sum(1 for c in calls if c.samples),
        wait_seconds=wait,
        compute_seconds=max(seconds - wait, 0.0),
        num_workers=max(c.num_workers for c in calls),
        batch_seconds=tuple(c.seconds + s for c, s in zip(calls, steps)),
        startup_seconds=startup,
    )


def run_script(script: Script) -> None:
    """Run the file as __main__ with its arguments; its errors become one-line PipelineErrors."""
    old_argv = sys.argv
    sys.argv = [str(script.path), *script.args]
    try:
        with user_code_context(script.path.resolve().parent):
            runpy.run_path(str(script.path), run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise PipelineError(
                f"{script.path} exited with status {exc.code}",
                "run it with python to see why; pass its arguments after --",
            ) from exc
    except PipelineError:
        raise
    except SyntaxError as exc:
        raise PipelineError(
            f"syntax error in {exc.filename}, line {exc.lineno}: {exc.msg}", "fix the syntax error and run again"
        ) from exc
    except ImportError as exc:
        raise PipelineError(
            f"{script.path} failed to import: {exc}", "install the missing module or fix the import"
        ) from exc
    except Exception as exc:
        raise PipelineError(
            f"{script.path} raised {type(exc).__name__}: {exc}",
            "fix the script (run it with python to see the traceback, or use --debug)",
        ) from exc
    finally:
        sys.argv = old_argv


def measure_script(
    script: Script,
    *,
    cores: int = 1,
    trace_dir: Path | None = None,
    clock: Clock = now,
    budget_seconds: float | None = None,
) -> ProfileData:
    """Run the script once, timing DataLoader iteration; with trace_dir, under torch.profiler.

    With `budget_seconds`, the script's loop is ended at the first batch request that many seconds
    after its first one: the budget counts from when the steps start, the imports and set-up before
    the loop are not in it. A loop stopped before MIN_MEASURED_BATCHES batches gives no stages and no
    finding, only a note: "too few steps: N measured; give --budget S".
    """
    calls: list[LoaderCall] = []
    began = clock()
    stopped_at: float | None = None
    with children_reaped():  # the processes the script started and left running end with its run
        try:
            _run_timed(script, calls, clock, budget_seconds, trace_dir)
        except BudgetReached:
            stopped_at = clock()
    total = clock() - began
    batches = sum(1 for c in calls if c.samples)
    too_few = stopped_at is not None and batches < MIN_MEASURED_BATCHES
    e2e = None if too_few else end_to_end_from_calls(calls)
    data = ProfileData(
        target=script.path.stem, mode="script", cores=cores, end_to_end=e2e, num_workers=e2e.num_workers if e2e else 0
    )
    data.extra["script"] = {
        "args": list(script.args),
        "run_seconds": total,
        "stopped_at_budget": stopped_at is not None,
        "loader_calls": batches,
        "outside_loop_seconds": total - ((e2e.seconds + e2e.startup_seconds) if e2e else 0.0),
        "loop_started_seconds": (calls[0].start_seconds - began) if calls else None,
    }
    if too_few and stopped_at is not None:
        data.extra["notes"] = [*data.extra.get("notes", []), too_few_note(calls, stopped_at, budget_seconds)]
    if e2e is not None:
        data.batch_size = max(c.samples for c in calls)
        data.stages = [
            StageTiming("dataloader", e2e.wait_seconds, e2e.samples),
            StageTiming("step", e2e.compute_seconds, e2e.samples),
        ]
    return data


def too_few_note(calls: list[LoaderCall], stopped_at: float, budget_seconds: float | None) -> str:
    """Why a loop the budget stopped early gives no finding, and the budget that would give one."""
    batches = sum(1 for c in calls if c.samples)
    per_batch = (stopped_at - calls[0].start_seconds) / max(batches, 1) if calls else 0.0
    suggested = max(2.0 * (budget_seconds or 0.0), SUGGESTED_BATCHES * per_batch)
    return (
        f"{TOO_FEW_STEPS}: {batches} measured (a batch takes {per_batch:.1f} s), no finding drawn from them; "
        f"give --budget {math.ceil(suggested)}"
    )


def _run_timed(
    script: Script, calls: list[LoaderCall], clock: Clock, loop_seconds: float | None, trace_dir: Path | None
) -> None:
    if trace_dir is None:
        with timed_loader_iteration(calls, clock, loop_seconds=loop_seconds):
            run_script(script)
        return
    from torch.profiler import ProfilerActivity, profile, tensorboard_trace_handler

    trace_dir.mkdir(parents=True, exist_ok=True)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(
        activities=activities,
        schedule=record_steps(MAX_TRACED_STEPS),
        on_trace_ready=tensorboard_trace_handler(str(trace_dir)),
    ) as prof:
        # Each batch request starts a profiler step, so the trace viewer shows one step per batch.
        with timed_loader_iteration(calls, clock, on_call=prof.step, loop_seconds=loop_seconds):
            run_script(script)
