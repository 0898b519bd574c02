"""`runtime.spinning`: an ONNX Runtime session's intra-op threads spin-wait between ops, measured.

ORT's pool spins by default: a worker that finished its share of an op keeps polling for the next
instead of sleeping, so a graph of many short ops (a decode step: GPT-2 small's int8 step, run 33
times a `generate()` of 32 tokens) does not pay a wake-up per op. accel builds its sessions with
spinning off, because a spinning pool keeps its cores busy after a call and on a busy machine takes
them from whatever runs next. Whether it pays for this model on this machine is the engine's to
measure: timed by hand on a quiet 2-core machine, alone or alternating, GPT-2's int8 loops (the
fused step's and the plain one's) took 237-267 ms a `generate()` spinning against 274-315 ms not;
an eager call timed right after a spinning one ran 1-2.4% slower, so the A/B's interleaving barely
feels the spin. (In the peers benchmark the engine's short trial of it read "not faster beyond
noise" once: its interval reached 0.99x.)

A setting of whatever the model slot keeps (`tunes_kept`): once a model is kept in an ORT session
(a forward or a generate loop's decode step), the engine tries it next, on that session, rebuilt.
The lock records it and rebuilds the restored session so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from accel.core.errors import LockError
from accel.core.measure import now
from accel.core.pipeline import Pipeline
from accel.optimizing.optimizers import Applied, Context, NoConfig, NotApplicable, Optimizer, register
from accel.optimizing.optimizers.runtime_threads import session_threads


def session_spinning(model: Any) -> bool | None:
    """Whether a model run in an ONNX Runtime session spins (OrtModel, or a loop over an ORT
    step: `spinning` and `respun`); None for any other model."""
    spinning = getattr(model, "spinning", None)
    return bool(spinning) if spinning is not None and callable(getattr(model, "respun", None)) else None


@register
class RuntimeSpinning(Optimizer):
    name = "runtime.spinning"
    cures = ("overhead",)
    tunes_kept: ClassVar[bool] = True
    predicted_setup_calls: ClassVar[float] = 0.0
    description = (
        "Let the ONNX Runtime session kept spin-wait between ops (ORT's default, off in accel's sessions): "
        "no wake-up per op on a quiet machine; the session built again."
    )
    Config = NoConfig

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        if context.machine.is_cuda:
            return "the model runs on a GPU: ORT's CPU thread pool does not run its kernels"
        model = pipeline.model
        spinning = session_spinning(model)
        if spinning is None:
            return "the model does not run in an ONNX Runtime session (an onnx.* candidate kept comes first)"
        if spinning:
            return f"its {type(model).__name__}'s threads spin already"
        if session_threads(model) == 1:
            return f"its {type(model).__name__} runs on one intra-op thread: no pool to spin"
        return None

    def apply(self, pipeline: Pipeline, config: NoConfig, context: Context) -> Applied:
        started = now()
        why_not = self.applicable(pipeline, context)
        if why_not is not None:
            raise NotApplicable(why_not)
        rebuilt = pipeline.replace(model=pipeline.model.respun(True))
        state = {"spinning": True}
        notes = {**state, "runtime": type(pipeline.model).__name__}
        return Applied(pipeline=rebuilt, state=state, setup_seconds=now() - started, notes=notes)

    def restore(self, pipeline: Pipeline, config: NoConfig, state: dict[str, Any], lock_dir: Path) -> Pipeline:
        """The session the lock's model entry restored, built again spinning."""
        if state.get("spinning", True) is not True:
            raise LockError(
                f"the lock's runtime.spinning state has spinning {state.get('spinning')!r}, not true",
                "run accel optimize again",
            )
        if session_spinning(pipeline.model) is None:
            raise LockError(
                "the lock's runtime.spinning entry follows no ONNX Runtime model",
                "run accel optimize again: the entry that kept the session is missing from the lock",
            )
        return pipeline.replace(model=pipeline.model.respun(True))
