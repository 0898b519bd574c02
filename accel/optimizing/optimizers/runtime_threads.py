"""`runtime.threads`: the model call's intra-op thread count, as a measured setting.

A small model's call is short next to what an OpenMP team costs to wake and join, and on a busy
machine a descheduled thread holds the others at every barrier (eager BERT ran 4.8x slower on two
threads than on one at load 6-9): fewer threads can be faster. For a torch model the setting is a
forward wrapper (`ThreadCount`) that runs each call at that count and puts the process's count back
after, so nothing outside the call changes. A model kept in a graph runtime (an ONNX Runtime session,
an OpenVINO compiled model) takes its thread count when it is built, so there the same graph is
built again at the count (`rethreaded`): beside four CPU burners OpenVINO's int8 BERT-base ran
1.09-1.19x faster on one thread than on two, ORT's fused int8 1.19x slower. The engine keeps either
only when it measures faster.

The engine tries one configuration per recipe line, so the count is a parameter: `threads: 1`, or
none for half the threads the model runs on (`cores // 2`). The slot is its own, composed after the
model's, so it applies to whatever runtime the model slot kept. The lock records the count measured
and re-applies it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import torch

from accel.core.errors import AccelError, LockError
from accel.core.measure import now, thread_count
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


def session_threads(model: Any) -> int | None:
    """The thread count of a model that runs in a graph runtime and can be built again at another
    (OrtModel, OvModel: `threads` and `rethreaded`), or None for any other model."""
    return int(model.threads) if callable(getattr(model, "rethreaded", None)) else None


@register
class RuntimeThreads(Optimizer):
    name = "runtime.threads"
    cures = ("overhead",)
    description = (
        "Run the model call at fewer intra-op threads (1, or half): torch's count around the call, the count "
        "restored after; an ONNX Runtime or OpenVINO model built again at that count."
    )
    Config = ThreadsConfig

    def resolved(self, config: ThreadsConfig) -> ThreadsConfig:
        """The count it asks for, at the count models are built at here (torch's): on two cores
        "half" and `threads: 1` are one trial."""
        return ThreadsConfig(chosen_threads(config, torch.get_num_threads()))

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        if context.machine.is_cuda:
            return "the model runs on a GPU: torch's CPU threads do not run its kernels"
        model = pipeline.model
        in_session = session_threads(model)
        if in_session is not None:
            return f"its {type(model).__name__} runs on one thread already" if in_session == 1 else None
        if isinstance(model, torch.nn.Module) and next(iter([*model.parameters(), *model.buffers()]), None) is None:
            return "the model holds no torch weights (it runs in another runtime, whose threads are its own)"
        if torch.get_num_threads() == 1:
            return "torch runs on one intra-op thread already"
        if isinstance(pipeline.forward_wrapper, ThreadCount):
            return f"the call already runs at {pipeline.forward_wrapper.threads} thread(s)"
        return None

    def apply(self, pipeline: Pipeline, config: ThreadsConfig, context: Context) -> Applied:
        started = now()
        in_session = session_threads(pipeline.model)
        current = torch.get_num_threads() if in_session is None else in_session
        threads = chosen_threads(config, current)
        if threads >= current:
            raise AccelError(
                f"the model runs on {current} intra-op threads: {threads} is not fewer",
                "give runtime.threads a count below the model's (threads: 1), or leave it out for half",
            )
        state = {"threads": threads, "threads_before": current}
        if in_session is None:
            return Applied(pipeline=with_threads(pipeline, threads), state=state, notes=dict(state))
        rebuilt = pipeline.replace(model=pipeline.model.rethreaded(threads))
        notes = {**state, "runtime": type(pipeline.model).__name__}
        return Applied(pipeline=rebuilt, state=state, setup_seconds=now() - started, notes=notes)

    def restore(self, pipeline: Pipeline, config: ThreadsConfig, state: dict[str, Any], lock_dir: Path) -> Pipeline:
        """The count the lock measured (a lock that travels keeps it, whatever this machine's count):
        around the call of a torch model, or the graph runtime's model built again at it."""
        in_session = session_threads(pipeline.model)
        current = torch.get_num_threads() if in_session is None else in_session
        threads = state.get("threads", chosen_threads(config, current))
        if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= MAX_THREADS:
            raise LockError(
                f"the lock's runtime.threads state has threads {threads!r}, not an int in 1..{MAX_THREADS}",
                "run accel optimize again",
            )
        if in_session is not None:
            return pipeline.replace(model=pipeline.model.rethreaded(threads))
        return with_threads(pipeline, threads)
