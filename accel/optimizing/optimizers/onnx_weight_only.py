"""`onnx.weight_only`: ONNX Runtime's MatMulNBits, 4-bit or 8-bit weights, activations left in float.

A bandwidth-bound model (batch-1 serving of large linear layers, LLM decode) spends its time
streaming weights: blockwise 4-bit weights move 8x fewer bytes than fp32 (8-bit, 4x), a scale per
`block_size` weights (`onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer`,
round to nearest). It pays only when the weights do not fit in cache: weights that stay in cache
between calls cost no memory traffic, so the optimizer does not apply when the Linear (and
transformers Conv1D) weights fit in the machine's largest cache.

The rewrite of Linear-like Gemms as MatMul and the quantizer are shared with
`onnx.generate_weight_only` (accel.optimizing.optimizers._weight_only). The export, session,
keyword calls, output structure and the lock entry are `onnx.runtime`'s; the MatMulNBits nodes
written are counted in the notes and the lock.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

from accel.core.machine import Machine
from accel.core.pipeline import Pipeline
from accel.optimizing.optimizers import Applied, Context, register
from accel.optimizing.optimizers._weight_only import (
    DEFAULT_ACCURACY_LEVEL,
    DEFAULT_BLOCK_SIZE,
    check_settings,
    fits_in_cache,
    quantize_weights,
)
from accel.optimizing.optimizers._weight_only import linear_weight_bytes as linear_weight_bytes
from accel.optimizing.optimizers.onnx_runtime import OnnxConfig, _ladder, _OnnxBase


@dataclasses.dataclass(frozen=True)
class WeightOnlyConfig(OnnxConfig):
    bits: int = 4
    block_size: int = DEFAULT_BLOCK_SIZE
    symmetric: bool = True
    accuracy_level: int = DEFAULT_ACCURACY_LEVEL

    def __post_init__(self) -> None:
        super().__post_init__()
        check_settings(self)


@register
class OnnxWeightOnly(_OnnxBase):
    name = "onnx.weight_only"
    numerics: ClassVar[str] = "int4"
    cures = ("memory_bandwidth",)
    description = (
        "ONNX Runtime with 4- or 8-bit blockwise weights (MatMulNBits), activations in float: for "
        "bandwidth-bound models whose Linear weights do not fit in cache."
    )
    Config = WeightOnlyConfig
    # The export, then a pass over every weight in numpy (seconds per hundred MB).
    predicted_setup_calls: ClassVar[float] = 8.0
    predicted_setup_seconds: ClassVar[float] = 5.0

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        reason = super().applicable(pipeline, context)
        if reason is None:
            # Said before an export is paid for.
            return fits_in_cache(pipeline.model, context.machine)
        return reason

    def apply(self, pipeline: Pipeline, config: OnnxConfig, context: Context) -> Applied:
        applied = super().apply(pipeline, config, context)
        notes = {
            **applied.notes,
            "matmul_nbits_nodes": applied.state["matmul_nbits_nodes"],
            "bits": applied.state["bits"],
        }
        return dataclasses.replace(applied, notes=notes)

    def transform(
        self, pipeline: Pipeline, fp32_path: Path, out_path: Path, config: WeightOnlyConfig
    ) -> tuple[Path, dict[str, Any]]:
        return out_path, quantize_weights(fp32_path, out_path, config)

    def safer_variants(self, config: WeightOnlyConfig, machine: Machine) -> list[Any]:
        """8-bit weights: 4-bit round-to-nearest erred 0.6% in cosine on a random-init wide MLP (the
        int8 guard allows 0.5%) at every block size, 8-bit 0.01%. Smaller blocks barely helped and
        ran several times slower, so they are not a rung."""
        return _ladder(config, [{"bits": 8}])
