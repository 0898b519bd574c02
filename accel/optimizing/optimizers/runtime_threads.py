"""`runtime.threads`: torch's intra-op thread count for the model call, as a measured setting.

A small model's call is short next to what an OpenMP team costs to wake and join, and on a busy
machine a descheduled thread holds the others at every barrier (eager BERT ran 4.8x slower on two
threads than on one at load 6-9): fewer threads can be faster. The setting is a forward wrapper
(`ThreadCount`) that runs each call at that count and puts the process's count back after, so
nothing outside the call changes; the engine keeps it only when it measures faster.

The engine tries one configuration per recipe line, so the count is a parameter: `threads: 1`, or
none for half the threads torch runs on (`cores // 2`). The lock records the count measured and
re-applies it. A model that runs in another runtime (an ONNX Runtime or OpenVINO session) holds no
torch weights; its threads are its session's, so the setting does not apply there.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import torch

from accel.core.errors import AccelError, LockError
from accel.core.measure import thread_count
from accel.core.pipeline import Pipeline
from accel.optimizing.optimizers import Applied, Context, Optimizer, register

# More threads than any machine accel runs on has cores: a lock asking for more is not one accel wrote.
MAX_THREADS = 4096


@dataclasses.dataclass(frozen=True)
class ThreadsConfig:
    threads: int | None = None  # None: half of torch's intra-op threads (cores // 2), at least 1

    def __post_init__(self) -> None:
        if self.threads is not None and (isinstance(self.threads, bool) or not 1 <= self.threads <= MAX_THREADS):
            raise ValueError(f"threads must be an int in 1..{MAX_THREADS} or left out, got {self.threads!r}")


def chosen_threads(config: ThreadsConfig, current: int) -> int:
    """The count a configuration runs the call at, given torch's current count."""
    return config.threads if config.threads is not None else max(current // 2, 1)


class ThreadCount:
    """A pipeline forward wrapper: each call at `threads` intra-op threads, the count restored after.
    A wrapper already on the pipeline (a result cache) runs inside it, and is reset through it."""

    def __init__(self, threads: int, inner: Callable[[Any, Callable[[Any], Any]], Any] | None = None) -> None:
        self.threads = threads
        self.inner = inner

    def __call__(self, batch: Any, forward: Callable[[Any], Any]) -> Any:
        with thread_count(self.threads):
            return forward(batch) if self.inner is None else self.inner(batch, forward)

    def reset_state(self) -> None:
        reset = getattr(self.inner, "reset_state", None)
        if callable(reset):
            reset()

    def __repr__(self) -> str:
        return f"ThreadCount(threads={self.threads})"


def with_threads(pipeline: Pipeline, threads: int) -> Pipeline:
    return pipeline.replace(forward_wrapper=ThreadCount(threads, pipeline.forward_wrapper))


@register
class RuntimeThreads(Optimizer):
    name = "runtime.threads"
    cures = ("overhead",)
    description = "Run the model call at fewer intra-op threads (1, or half of torch's), the count restored after."
    Config = ThreadsConfig

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        if context.machine.is_cuda:
            return "the model runs on a GPU: torch's CPU threads do not run its kernels"
        model = pipeline.model
        if isinstance(model, torch.nn.Module) and next(iter([*model.parameters(), *model.buffers()]), None) is None:
            return "the model holds no torch weights (it runs in another runtime, whose threads are its own)"
        if torch.get_num_threads() == 1:
            return "torch runs on one intra-op thread already"
        if isinstance(pipeline.forward_wrapper, ThreadCount):
            return f"the call already runs at {pipeline.forward_wrapper.threads} thread(s)"
        return None

    def apply(self, pipeline: Pipeline, config: ThreadsConfig, context: Context) -> Applied:
        current = torch.get_num_threads()
        threads = chosen_threads(config, current)
        if threads >= current:
            raise AccelError(
                f"torch runs on {current} intra-op threads: {threads} is not fewer",
                "give runtime.threads a count below torch's (threads: 1), or leave it out for half",
            )
        return Applied(
            pipeline=with_threads(pipeline, threads),
            state={"threads": threads, "threads_before": current},
            notes={"threads": threads, "threads_before": current},
        )

    def restore(self, pipeline: Pipeline, config: ThreadsConfig, state: dict[str, Any], lock_dir: Path) -> Pipeline:
        """The count the lock measured (a lock that travels keeps it, whatever this machine's count)."""
        threads = state.get("threads", chosen_threads(config, torch.get_num_threads()))
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
            raise LockError(
                f"the lock's runtime.threads state has threads {threads!r}, not an int in 1..{MAX_THREADS}",
                "run accel optimize again",
            )
        return with_threads(pipeline, threads)
