"""`quantize.int8_dynamic`: int8 weights, activations quantized per call, in PyTorch.

Backend "auto" (the default) runs the eager dynamic-quantized Linear kernels that ship with torch
(fbgemm on x86): the kernel calibration times as this cure's (accel.core.cure_kernels), and the one
that runs fast on a CPU today. torchao's `quantize_` with `Int8DynamicActivationInt8WeightConfig`
(the maintained path; torch.ao.quantization is deprecated) runs only when asked for with
`backend: torchao`: being installed is no reason, since on an AVX2 CPU its int8 path
(torch._int_mm) runs several times slower than eager fbgemm. Which backend ran is recorded, and
the engine's measurement decides whether it is kept.

transformers' GPT-2 family computes its projections with `Conv1D` (y = x @ W + b, W of shape
(in, out)), not `nn.Linear`: on the copy that is quantized, each Conv1D becomes the nn.Linear it is
(weight W.T, the same bias) first, so those layers are quantized too, not only the lm_head.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import warnings
from typing import Any, ClassVar

import torch

from accel.core.machine import Machine
from accel.core.measure import now
from accel.core.pipeline import Pipeline
from accel.optimizing.optimizers import Applied, Context, Optimizer, register
from accel.optimizing.optimizers._sensitivity import layer_errors, worst_layers

BACKENDS = ("auto", "torchao", "eager")
# The safer variants' shares of Linear layers left in float, after per-channel scales: the worst
# tenth, then the worst quarter (measured per layer on the example batch).
KEEP_FLOAT_LADDER = (0.1, 0.25)


@dataclasses.dataclass(frozen=True)
class QuantizeConfig:
    backend: str = "auto"
    # Per-output-channel weight scales (eager backend): the safer variant when one scale per
    # tensor loses too much (activations already use a 7-bit range: fbgemm's reduce_range is on).
    per_channel: bool = False
    # The share of the Linear layers left in float, those whose int8 output differs most from
    # their float output on the example batch (optimizers._sensitivity): the ladder's last rungs.
    keep_float: float = 0.0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if not 0.0 <= self.keep_float < 1.0:
            raise ValueError(f"keep_float must lie in [0, 1), got {self.keep_float!r}")


def _has_torchao() -> bool:
    try:
        import torchao.quantization  # noqa: F401
    except ImportError:
        return False
    return True


def _linear_count(model: torch.nn.Module) -> int:
    conv1d = _conv1d_class()
    return sum(
        isinstance(m, torch.nn.Linear) or (conv1d is not None and isinstance(m, conv1d)) for m in model.modules()
    )


def _conv1d_class() -> type | None:
    """transformers' Conv1D, when the process has imported it (a model that holds one has)."""
    found = getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)
    return found if isinstance(found, type) else None


def conv1d_as_linear_(model: torch.nn.Module) -> int:
    """Replace, in `model` (a copy: this mutates it), each transformers Conv1D by the nn.Linear it
    computes (weight W.T, the same bias); how many were replaced. A Conv1D used in two places
    becomes one Linear used in both."""
    conv1d = _conv1d_class()
    if conv1d is None:
        return 0
    replaced: dict[int, torch.nn.Linear] = {}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, conv1d):
                continue
            if id(child) not in replaced:
                weight: torch.Tensor = getattr(child, "weight").detach()
                bias: torch.Tensor | None = getattr(child, "bias", None)
                linear = torch.nn.Linear(weight.shape[0], weight.shape[1], bias=bias is not None)
                with torch.no_grad():
                    linear.weight.copy_(weight.t())
                    if bias is not None:
                        linear.bias.copy_(bias.detach())
                replaced[id(child)] = linear.train(child.training)
            setattr(parent, name, replaced[id(child)])
    return len(replaced)


@register
class QuantizeInt8Dynamic(Optimizer):
    name = "quantize.int8_dynamic"
    numerics: ClassVar[str] = "int8"
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
            return "the model has no nn.Linear (or transformers Conv1D) layers to quantize"
        if any(p.dtype != torch.float32 for p in model.parameters()):
            return "the model's weights are not float32"
        return None

    def apply(
        self, pipeline: Pipeline, config: QuantizeConfig, context: Context, float_layers: list[str] | None = None
    ) -> Applied:
        """`float_layers`: the layers a lock left in float (else measured when config.keep_float asks)."""
        started = now()
        backend = config.backend
        if backend == "auto":
            backend = "eager"  # the kernel calibrated as this cure's; torchao only when asked for
        model = copy.deepcopy(pipeline.model).eval()
        conv1d_layers = conv1d_as_linear_(model)
        if backend == "torchao":
            from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

            quantize_(model, Int8DynamicActivationInt8WeightConfig())
        else:
            float_layers = _float_layers(model, pipeline, config, float_layers)
            model = _quantized(model, config.per_channel, float_layers)
        state = {"backend": backend, "linear_layers": _linear_count(pipeline.model), "conv1d_layers": conv1d_layers}
        notes: dict[str, Any] = {"backend": backend, "conv1d_layers": conv1d_layers}
        if float_layers:
            state["float_layers"] = notes["float_layers"] = list(float_layers)
        return Applied(pipeline=pipeline.replace(model=model), state=state, setup_seconds=now() - started, notes=notes)

    def safer_variants(self, config: QuantizeConfig, machine: Machine) -> list[Any]:
        """Per-channel weight scales on the eager kernels (torchao's int8 path has them already), then
        the worst layers left in float (KEEP_FLOAT_LADDER)."""
        if config.backend == "torchao" or config.keep_float:
            return []
        ladder = [] if config.per_channel else [dataclasses.replace(config, per_channel=True)]
        return ladder + [dataclasses.replace(config, per_channel=True, keep_float=share) for share in KEEP_FLOAT_LADDER]

    def restore(self, pipeline: Pipeline, config: QuantizeConfig, state: dict[str, Any], lock_dir: Any) -> Pipeline:
        backend = state.get("backend", config.backend)
        if backend == "torchao" and not _has_torchao():
            backend = "eager"
        context = Context(machine=_cpu_machine(), workdir=lock_dir)
        kept = state.get("float_layers")
        float_layers = [str(name) for name in kept] if isinstance(kept, list) else None
        return self.apply(pipeline, dataclasses.replace(config, backend=backend), context, float_layers).pipeline


def _float_layers(
    model: torch.nn.Module, pipeline: Pipeline, config: QuantizeConfig, given: list[str] | None
) -> list[str]:
    """The layers to leave in float: the lock's, else the measured worst share config.keep_float asks."""
    if given is not None or not config.keep_float:
        return list(given or [])
    errors = layer_errors(model, _quantized(copy.deepcopy(model), config.per_channel, []), pipeline)
    return worst_layers(errors, config.keep_float)


def worst_linear_layers(pipeline: Pipeline, share: float, per_channel: bool) -> list[str]:
    """The names of the `share` of the pipeline model's Linear (and Conv1D) layers whose int8
    output differs most from their float output on the example batch (fbgemm's dynamic int8 as
    the measure: ONNX Runtime's dynamic quantizer rounds the same way, u8 activations per tensor
    and s8 weights), worst first."""
    model = copy.deepcopy(pipeline.model).eval()
    conv1d_as_linear_(model)
    return _float_layers(model, pipeline, QuantizeConfig(per_channel=per_channel, keep_float=share), None)


def _quantized(model: torch.nn.Module, per_channel: bool, float_layers: list[str]) -> torch.nn.Module:
    """The eager dynamic int8 model: every Linear but `float_layers` (names) quantized."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

        qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
        if not float_layers:
            spec: Any = {torch.nn.Linear: qconfig} if per_channel else {torch.nn.Linear}
        else:
            skip = set(float_layers)
            spec = {
                name: qconfig
                for name, module in model.named_modules()
                if isinstance(module, torch.nn.Linear) and name not in skip
            }
        return quantize_dynamic(model, spec, dtype=torch.qint8)


def _cpu_machine() -> Any:
    from accel.core.machine import describe_machine

    return describe_machine("cpu")
