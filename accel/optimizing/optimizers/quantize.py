"""`quantize.int8_dynamic`: int8 weights, activations quantized per call, in PyTorch.

Backend "auto" (the default) runs the eager dynamic-quantized Linear kernels that ship with torch
(fbgemm on x86): the kernel calibration times as this cure's (accel.core.cure_kernels), and the one
that runs fast on a CPU today. torchao's `quantize_` with `Int8DynamicActivationInt8WeightConfig`
(the maintained path; torch.ao.quantization is deprecated) runs only when asked for with
`backend: torchao`: being installed is no reason, since on an AVX2 CPU its int8 path
(torch._int_mm) runs several times slower than eager fbgemm. Which backend ran is recorded, and
the engine's measurement decides whether it is kept.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from typing import Any, ClassVar

import torch

from accel.core.measure import now
from accel.core.pipeline import Pipeline
from accel.optimizing.optimizers import Applied, Context, Optimizer, register

BACKENDS = ("auto", "torchao", "eager")


@dataclasses.dataclass(frozen=True)
class QuantizeConfig:
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")


def _has_torchao() -> bool:
    try:
        import torchao.quantization  # noqa: F401
    except ImportError:
        return False
    return True


def _linear_count(model: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.Linear) for m in model.modules())


@register
class QuantizeInt8Dynamic(Optimizer):
    name = "quantize.int8_dynamic"
    cures = ("compute_bound", "memory_bandwidth")
    description = "PyTorch int8 dynamic quantization of Linear layers (eager fbgemm kernels; torchao when asked for)."
    slot: ClassVar[str] = "model"
    Config = QuantizeConfig

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        model = pipeline.model
        if not isinstance(model, torch.nn.Module):
            return "the model is not a torch.nn.Module"
        if context.machine.is_cuda:
            return "dynamic int8 quantization here targets CPU kernels; the model is on a GPU"
        if _linear_count(model) == 0:
            return "the model has no nn.Linear layers to quantize"
        if any(p.dtype != torch.float32 for p in model.parameters()):
            return "the model's weights are not float32"
        return None

    def apply(self, pipeline: Pipeline, config: QuantizeConfig, context: Context) -> Applied:
        started = now()
        backend = config.backend
        if backend == "auto":
            backend = "eager"  # the kernel calibrated as this cure's; torchao only when asked for
        model = copy.deepcopy(pipeline.model).eval()
        if backend == "torchao":
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

            quantize_(model, Int8DynamicActivationInt8WeightConfig())
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from torch.ao.quantization import quantize_dynamic

                model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        return Applied(
            pipeline=pipeline.replace(model=model),
            state={"backend": backend, "linear_layers": _linear_count(pipeline.model)},
            setup_seconds=now() - started,
            notes={"backend": backend},
        )

    def restore(self, pipeline: Pipeline, config: QuantizeConfig, state: dict[str, Any], lock_dir: Any) -> Pipeline:
        backend = state.get("backend", config.backend)
        if backend == "torchao" and not _has_torchao():
            backend = "eager"
        context = Context(machine=_cpu_machine(), workdir=lock_dir)
        return self.apply(pipeline, dataclasses.replace(config, backend=backend), context).pipeline


def _cpu_machine() -> Any:
    from accel.core.machine import describe_machine

    return describe_machine("cpu")
