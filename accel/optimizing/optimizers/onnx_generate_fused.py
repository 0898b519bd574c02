"""Generate loops in ONNX Runtime on a fused decode step: `onnx.generate`'s loop, with ORT's
transformer fusions (`onnx.fusions`' pass) on the exported step.

- `onnx.generate_fused`: the fused step in fp32;
- `onnx.generate_fused_int8`: `onnx.generate_int8`'s quantize_dynamic on the fused step (int8 taken
  on the fused kernels, a fused Attention becoming QAttention).

The fusions replace subgraphs inside the step (LayerNorm after a residual add as
SkipLayerNormalization, GPT-2's tanh GELU as FastGelu, Llama's RMSNorm as
SkipSimplifiedLayerNormalization); the step's inputs and outputs, the past/present names and their
dynamic axes are kept, so the loop, the lock and the exact token guard are `onnx.generate`'s. The
fused nodes are counted in the notes and the lock; a step where no pattern matched is not
applicable (the patterns stop matching silently when model code changes), and `onnx.generate` runs
it unfused. With torch 2.13 / ORT 1.32 the attention of the step (its past fed as separate key and
value tensors) matched no Attention fusion on GPT-2 or Llama: the LayerNorm and GELU kernels did.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

from accel.core.pipeline import Pipeline
from accel.optimizing.optimizers import Applied, Context, NotApplicable, register
from accel.optimizing.optimizers.onnx_fusions import check_fusion_settings, fuse
from accel.optimizing.optimizers.onnx_generate import (
    GenerateConfig,
    GenerateInt8Config,
    OnnxGenerate,
    OnnxGenerateInt8,
)

NO_MATCH_HINT = "ORT's fusions match LayerNorm, GELU and attention subgraphs; onnx.generate runs the step unfused"


@dataclasses.dataclass(frozen=True)
class GenerateFusedConfig(GenerateConfig):
    model_type: str = "auto"  # ORT's fusion set; auto: from the transformers config (gpt2), else bert
    num_heads: int = 0  # 0: the transformers config's
    hidden_size: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fusion_settings(self)


@dataclasses.dataclass(frozen=True)
class GenerateFusedInt8Config(GenerateFusedConfig, GenerateInt8Config):
    pass


def fuse_step(pipeline: Pipeline, fp32_path: Path, out_path: Path, config: GenerateFusedConfig) -> dict[str, Any]:
    """`onnx.fusions`' pass on the exported step, the fusion set read from the pipeline's model;
    not applicable (NotApplicable) when no pattern matched. Without ORT's symbolic shape inference:
    on GPT-2 small's step it took 13 of the pass's 19 s (each of its five runs copies the weights),
    and without it the same 24 SkipLayerNormalization nodes fused, the per-channel int8 loop gave
    the same tokens at the same speed (573 against 580 ms a generate(), interleaved), and the
    pass with the int8 quantization took 40 s against 61 s."""
    return fuse(
        pipeline.model, fp32_path, out_path, config, no_match=NotApplicable, hint=NO_MATCH_HINT, shape_inference=False
    )


def with_fused_notes(applied: Applied) -> Applied:
    return dataclasses.replace(applied, notes={**applied.notes, "fused_nodes": applied.state["fused_nodes"]})


@register
class OnnxGenerateFused(OnnxGenerate):
    name = "onnx.generate_fused"
    extends = "onnx.generate"
    description = (
        "The generate loop in ONNX Runtime with ORT's transformer fusions on the decode step "
        "(SkipLayerNorm, FastGelu, Attention...), fp32; the fused nodes are counted."
    )
    Config = GenerateFusedConfig
    predicted_setup_calls: ClassVar[float] = 3.0  # the export, then the fusion pass over the graph

    def apply(self, pipeline: Pipeline, config: GenerateConfig, context: Context) -> Applied:
        return with_fused_notes(super().apply(pipeline, config, context))

    def transform(
        self, pipeline: Pipeline, fp32_path: Path, out_path: Path, config: GenerateFusedConfig
    ) -> tuple[Path, dict[str, Any]]:
        return out_path, fuse_step(pipeline, fp32_path, out_path, config)


@register
class OnnxGenerateFusedInt8(OnnxGenerateInt8):
    name = "onnx.generate_fused_int8"
    numerics: ClassVar[str] = "int8"
    # onnx.generate_int8's quantization, on a fused step (as onnx.fusions_int8 extends onnx.int8_dynamic):
    # tried just before it, and when kept the unfused int8 loop is not tried
    extends = "onnx.generate_int8"
    description = "The generate loop in ONNX Runtime with the fused decode step quantized to int8 (quantize_dynamic)."
    Config = GenerateFusedInt8Config
    predicted_setup_calls: ClassVar[float] = 4.0  # the export, the fusion pass, then a pass over its weights

    def apply(self, pipeline: Pipeline, config: GenerateConfig, context: Context) -> Applied:
        return with_fused_notes(super().apply(pipeline, config, context))

    def transform(
        self, pipeline: Pipeline, fp32_path: Path, out_path: Path, config: Any
    ) -> tuple[Path, dict[str, Any]]:
        fused_path = out_path.with_name(f"{out_path.stem}-fused.onnx")
        fused = fuse_step(pipeline, fp32_path, fused_path, config)
        path, quantized = super().transform(pipeline, fused_path, out_path, config)  # removes the fused file
        return path, {**fused, **quantized}
