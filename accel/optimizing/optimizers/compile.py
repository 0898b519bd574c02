"""`compile`: torch.compile where a compiler works.

On CPU, inductor generates C++ and needs a C++ compiler; the optimizer checks for one and does not
apply without it. Compilation happens on the first call: that one-time cost is measured here (as
setup) and reported apart from the steady state, because a compile that takes minutes matters to a
user even when the steady state wins.

`freezing: true` turns on inductor's freezing (`torch._inductor.config.freezing`, off by default in
torch 2.13): the weights of an inference model, called under no_grad as accel calls it, are folded
into the compiled graph as constants (constant folding, prepacked weights). The flag is scoped to
the compiled model's calls with `torch._inductor.config.patch`, so a recompile at a new shape is
frozen too and nothing else in the process changes. `mode` takes `max-autotune-no-cudagraphs`
(inductor benchmarks its kernel choices; a one-time cost like an export).
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
from typing import Any, Callable, ClassVar

import torch

from accel.core.measure import now
from accel.core.pipeline import Pipeline
from accel.optimizing.optimizers import Applied, Context, Optimizer, register
from accel.optimizing.optimizers._model_io import with_forward

MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs")


@dataclasses.dataclass(frozen=True)
class CompileConfig:
    mode: str = "default"
    dynamic: bool | None = None
    backend: str = "inductor"
    freezing: bool = False  # inductor's freezing: weights folded into the graph as constants

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.backend not in ("inductor", "eager", "aot_eager"):
            raise ValueError(f"backend must be inductor, eager or aot_eager, got {self.backend!r}")
        if not isinstance(self.freezing, bool):
            raise ValueError(f"freezing must be true or false, got {self.freezing!r}")
        if self.freezing and self.backend != "inductor":
            raise ValueError(f"freezing is inductor's: it needs backend inductor, got {self.backend!r}")


def cxx_compiler() -> str | None:
    for name in ("c++", "g++", "clang++"):
        found = shutil.which(name)
        if found:
            return found
    return None


@register
class Compile(Optimizer):
    name = "compile"
    cures = ("overhead", "memory_bandwidth", "straggler")
    description = "torch.compile (inductor); the one-time compilation is measured and reported apart."
    slot: ClassVar[str] = "model"
    # Inductor's compile is tens of seconds whatever the call takes (codegen, C++ builds), plus
    # a few traced calls.
    predicted_setup_calls: ClassVar[float] = 3.0
    predicted_setup_seconds: ClassVar[float] = 20.0
    Config = CompileConfig

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        if not isinstance(pipeline.model, torch.nn.Module):
            return "the model is not a torch.nn.Module"
        if isinstance(pipeline.model, torch._dynamo.eval_frame.OptimizedModule):
            return "the model is already compiled"
        if not context.machine.is_cuda and cxx_compiler() is None:
            return "torch.compile on CPU needs a C++ compiler (g++ or clang++), and none is on PATH"
        return None

    def apply(self, pipeline: Pipeline, config: CompileConfig, context: Context) -> Applied:
        candidate = pipeline.replace(model=compiled(pipeline, config))
        batch = pipeline.example_batch()
        started = now()
        with torch.inference_mode():
            # a generate loop compiles over its own calls (T5's model cannot be called on the prompt alone)
            candidate.forward(batch) if pipeline.generate is not None else candidate.call_model(batch)
        compile_seconds = now() - started
        return Applied(
            pipeline=candidate,
            state={"mode": config.mode, "backend": config.backend, "freezing": config.freezing},
            setup_seconds=compile_seconds,
            notes={"compile_seconds": round(compile_seconds, 2)},
        )

    def restore(self, pipeline: Pipeline, config: CompileConfig, state: dict[str, Any], lock_dir: Any) -> Pipeline:
        return pipeline.replace(model=compiled(pipeline, config))


def compiled(pipeline: Pipeline, config: CompileConfig) -> torch.nn.Module:
    """The model compiled. A generate loop calls the model's own generate(), which a compiled
    wrapper (OptimizedModule) hands to the uncompiled model: there the forward is compiled inside
    a copy of the model, as transformers' docs do (`model.forward = torch.compile(model.forward)`)."""

    def build(target: Any) -> Any:
        built = torch.compile(target, mode=config.mode, dynamic=config.dynamic, backend=config.backend)
        return frozen_calls(built) if config.freezing and not isinstance(built, torch.nn.Module) else built

    if pipeline.generate is not None and callable(getattr(pipeline.model, "generate", None)):
        return with_forward(pipeline.model, build)
    compiled: torch.nn.Module = build(pipeline.model)
    if config.freezing:
        # an OptimizedModule calls its `forward` attribute (dynamo's wrapper): each call, and the
        # compile it triggers, under the flag; the module stays an OptimizedModule
        compiled.forward = frozen_calls(compiled.forward)
    return compiled


def frozen_calls(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` called with inductor's freezing on, the process's setting put back after each call."""
    from torch._inductor import config as inductor_config

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with inductor_config.patch(freezing=True):
            return fn(*args, **kwargs)

    return call
