"""What runs inside each torchrun rank: the user's script in script mode, with light timing.

`python -m accel.profiling.multirank.rank SCRIPT [ARGS]`, started by accel.profiling.multirank.launch.
For the duration of the script it times, on this rank:
- every DataLoader batch request (accel.profiling.script.timed_loader_iteration): the data wait,
  and the steps between requests;
- every collective called through `torch.distributed` (all_reduce, all_gather, broadcast, barrier,
  ...): the arrival (the call) and the completion (the call's return, or its future's completion
  for async_op=True);
- DDP's gradient all-reduce, with DDP's own (C++) reduction untouched: a DDP forward (outside
  no_sync) puts a hook on its output's gradient, which queues an autograd-engine callback for the
  end of the backward pass; the callback's time is the arrival (every gradient computed, the last
  bucket handed to the all-reduce), and the return of `torch.autograd.backward`, which waits for
  DDP's all-reduce, is the completion. One collective per backward: the step's sync point.
  (A Python comm hook timing each bucket cost 14-17% of a small model's step: its future callbacks
  need the GIL on the process group's thread.)
Right after the script's `init_process_group`, the ranks meet at a barrier and all_gather their
local clocks; every time this rank writes is on rank 0's clock. The result (or the script's
error) goes to `$ACCEL_MULTIRANK_OUT/rank{RANK}.json`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch.autograd import Variable
from torch.nn.parallel import DistributedDataParallel

from accel.core.errors import PipelineError
from accel.core.io import write_json_atomic, write_text_atomic
from accel.core.loading import Script
from accel.core.measure import Clock, now
from accel.profiling.script import LoaderCall, run_script, timed_loader_iteration
from accel.profiling.trace import record_steps

ENV_OUT = "ACCEL_MULTIRANK_OUT"
ENV_TRACE = "ACCEL_MULTIRANK_TRACE"
# Steps each rank traces with torch.profiler: enough to see the pattern in Perfetto or HTA while the
# trace stays a few MB and the profiler's cost stays on a few steps.
TRACED_STEPS = 12
# The clock exchange runs twice: the first round opens the connections, the second is measured.
ALIGN_ROUNDS = 2
COLLECTIVES = (
    "all_reduce",
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_object",
    "all_to_all",
    "all_to_all_single",
    "barrier",
    "broadcast",
    "broadcast_object_list",
    "gather",
    "reduce",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "scatter",
)
DDP_ALLREDUCE = "ddp.allreduce"


@dataclasses.dataclass
class Recorder:
    """What this rank measured, on its local clock until written (then on rank 0's)."""

    clock: Clock = now
    offset_seconds: float = 0.0
    initialized: bool = False
    backend: str = ""
    world_size: int = 1
    calls: list[tuple[str, float, float]] = dataclasses.field(default_factory=list)
    # When the running backward pass finished its gradients (DDP's all-reduce is still pending).
    arrival_seconds: float | None = None
    loader: list[LoaderCall] = dataclasses.field(default_factory=list)

    def record(self, name: str, arrival: float, done: float) -> None:
        # Called from the main thread and from the process group's threads (future callbacks);
        # list.append is atomic under the GIL.
        self.calls.append((name, arrival, done))

    def record_when_done(self, work: Any, name: str, arrival: float) -> None:
        try:
            future = work.get_future()
        except (AttributeError, RuntimeError):
            self.record(name, arrival, self.clock())
            return
        future.add_done_callback(lambda _: self.record(name, arrival, self.clock()))


def align_clocks(recorder: Recorder, originals: dict[str, Callable]) -> None:
    """Barrier, then all_gather of local clocks: this rank's offset from rank 0's clock."""
    backend = str(dist.get_backend())
    # The exchange needs CPU tensors: the default group when it has gloo, a gloo group otherwise.
    group = None if "gloo" in backend else dist.new_group(backend="gloo")
    world = dist.get_world_size()
    gathered = [torch.zeros(1, dtype=torch.float64) for _ in range(world)]
    local = 0.0
    for _ in range(ALIGN_ROUNDS):
        originals["barrier"](group=group)
        local = recorder.clock()
        originals["all_gather"](gathered, torch.tensor([local], dtype=torch.float64), group=group)
    recorder.offset_seconds = local - float(gathered[0].item())
    recorder.initialized, recorder.backend, recorder.world_size = True, backend, world


def _timed_collective(recorder: Recorder, name: str, function: Callable) -> Callable:
    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        arrival = recorder.clock()
        result = function(*args, **kwargs)
        if hasattr(result, "wait") and hasattr(result, "get_future"):  # async_op=True: a Work
            recorder.record_when_done(result, name, arrival)
        else:
            recorder.record(name, arrival, recorder.clock())
        return result

    return timed


def _first_grad_tensor(output: Any) -> torch.Tensor | None:
    leaves, _ = torch.utils._pytree.tree_flatten(output)
    return next((t for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad), None)


@contextlib.contextmanager
def timed_distributed(recorder: Recorder) -> Iterator[None]:
    """Patch torch.distributed's collectives, init_process_group and DDP's hooks; restore after."""
    originals = {name: getattr(dist, name) for name in COLLECTIVES if hasattr(dist, name)}
    original_init = dist.init_process_group
    ddp_forward = DistributedDataParallel.forward
    original_backward = torch.autograd.backward

    @functools.wraps(original_init)
    def init_process_group(*args: Any, **kwargs: Any) -> Any:
        result = original_init(*args, **kwargs)
        align_clocks(recorder, originals)
        return result

    def gradients_done() -> None:
        recorder.arrival_seconds = recorder.clock()

    def on_output_grad(_grad: torch.Tensor) -> None:
        # The first gradient of the backward pass: queue a callback for its end. DDP queues the
        # wait for its all-reduce when its last bucket is ready, later, so this one runs first.
        Variable._execution_engine.queue_callback(gradients_done)

    def forward(self: DistributedDataParallel, *args: Any, **kwargs: Any) -> Any:
        output = ddp_forward(self, *args, **kwargs)
        if torch.is_grad_enabled() and self.require_backward_grad_sync:  # not under no_sync()
            tensor = _first_grad_tensor(output)
            if tensor is not None:
                tensor.register_hook(on_output_grad)
        return output

    @functools.wraps(original_backward)
    def backward(*args: Any, **kwargs: Any) -> Any:
        recorder.arrival_seconds = None
        result = original_backward(*args, **kwargs)
        if recorder.arrival_seconds is not None:
            recorder.record(DDP_ALLREDUCE, recorder.arrival_seconds, recorder.clock())
            recorder.arrival_seconds = None
        return result

    patches: list[tuple[Any, str, Any, Any]] = [
        (dist, name, fn, _timed_collective(recorder, name, fn)) for name, fn in originals.items()
    ]
    patches += [
        (dist, "init_process_group", original_init, init_process_group),
        (DistributedDataParallel, "forward", ddp_forward, forward),
        (torch.autograd, "backward", original_backward, backward),
    ]
    for owner, name, _, patched in patches:
        setattr(owner, name, patched)
    try:
        yield
    finally:
        for owner, name, original, _ in patches:
            setattr(owner, name, original)


def steps_from_loader(calls: list[LoaderCall]) -> list[list[float]]:
    """[start, end, data wait, samples] per step: from one batch request to the next."""
    return [
        [a.start_seconds, b.start_seconds, a.seconds, a.samples]
        for a, b in zip(calls, calls[1:])
        if a.samples and not a.exhausted
    ]


def result_dict(recorder: Recorder, rank: int, error: dict | None) -> dict[str, Any]:
    """What this rank writes, every time on rank 0's clock."""
    shift = recorder.offset_seconds
    return {
        "rank": rank,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "initialized": recorder.initialized,
        "backend": recorder.backend,
        "world_size": recorder.world_size,
        "clock_offset_seconds": shift,
        "num_workers": max((c.num_workers for c in recorder.loader), default=0),
        "steps": [[s - shift, e - shift, w, n] for s, e, w, n in steps_from_loader(recorder.loader)],
        "calls": [[name, a - shift, d - shift] for name, a, d in sorted(recorder.calls, key=lambda c: c[1])],
        "error": error,
    }


def run_rank(script: Script, rank: int, out_dir: Path, trace_dir: Path | None, clock: Clock = now) -> bool:
    """Run the script on this rank, write its result; False when the script failed."""
    recorder = Recorder(clock=clock)
    error = None
    try:
        with timed_distributed(recorder), contextlib.ExitStack() as stack:
            on_call: Callable[[], None] = lambda: None
            if trace_dir is not None:
                on_call = stack.enter_context(LazyProfiler(trace_dir, rank)).step
            stack.enter_context(timed_loader_iteration(recorder.loader, clock, on_call=on_call))
            run_script(script)
    except PipelineError as exc:
        cause = exc.__cause__
        error = {
            "message": exc.message,
            "type": type(cause).__name__ if cause is not None else type(exc).__name__,
            "wall_time": time.time(),
        }
    write_json_atomic(out_dir / f"rank{rank}.json", result_dict(recorder, rank, error))
    return error is None


class LazyProfiler:
    """torch.profiler started at the first batch request, stepped at each one, stopped at exit.

    Started inside the loop, after init_process_group, so each trace carries distributedInfo (the
    rank, the world size) that Holistic Trace Analysis reads, and leaves out the set-up collectives.
    """

    def __init__(self, trace_dir: Path, rank: int) -> None:
        self.trace_dir, self.rank = trace_dir, rank
        self.profiler: Any = None

    def step(self) -> None:
        if self.profiler is not None:
            self.profiler.step()
            return
        from torch.profiler import ProfilerActivity, profile, tensorboard_trace_handler

        self.trace_dir.mkdir(parents=True, exist_ok=True)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        self.profiler = profile(
            activities=activities,
            schedule=record_steps(TRACED_STEPS),
            on_trace_ready=tensorboard_trace_handler(str(self.trace_dir), worker_name=f"rank{self.rank}"),
        )
        self.profiler.start()

    def __enter__(self) -> "LazyProfiler":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.profiler is not None:
            self.profiler.stop()


def main(argv: list[str]) -> int:
    out_dir = Path(os.environ[ENV_OUT])
    trace = os.environ.get(ENV_TRACE)
    rank = int(os.environ.get("RANK", "0"))
    write_text_atomic(out_dir / f"rank{rank}.pid", str(os.getpid()))
    script = Script(path=Path(argv[0]), args=tuple(argv[1:]))
    ok = run_rank(script, rank, out_dir, Path(trace) if trace else None)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
