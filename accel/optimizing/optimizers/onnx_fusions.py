"""ONNX Runtime's transformer graph fusions: attention, LayerNorm, GELU and bias subgraphs of the
exported graph replaced by ORT's fused kernels, then run in an ORT session.

- `onnx.fusions`: the fused graph in fp32;
- `onnx.fusions_int8`: ORT's dynamic quantization on the fused graph, where a fused `Attention`
  becomes `QAttention` (int8 is taken on the fused kernels, not on the MatMuls they replaced).

`onnxruntime.transformers.optimizer.optimize_model` matches the graphs torch's TorchScript exporter
writes for eager attention; with SDPA attention or the dynamo exporter no Attention node is fused,
and `opt_level=1` wrote a graph ORT 1.32 refused to load, so the export is TorchScript, a
transformers model is exported from a copy switched to eager attention, and opt_level is 0. The
patterns stop matching silently when model code changes (ORT issues 23864, 21208, 19423), so the
fused nodes are counted, recorded in the notes and the lock, and a graph with none is refused.
Keyword calls, `ModelOutput` structure and dynamic batch and sequence axes are kept as
`onnx.runtime` keeps them (the export and the session are its).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Protocol

from accel.core.errors import AccelError
from accel.core.pipeline import Pipeline
from accel.optimizing.optimizers import Applied, Context, _export_cache, register
from accel.optimizing.optimizers._model_io import has_attention
from accel.optimizing.optimizers._onnx_export import quiet
from accel.optimizing.optimizers.onnx_runtime import OnnxConfig, _OnnxBase

# ORT's model types whose fusions take num_heads and hidden_size ("auto": from the model's config).
FUSION_MODEL_TYPES = ("bert", "gpt2", "bart", "t5", "vit", "clip", "swin")
# transformers' `model_type` -> ORT's fusion set; any other encoder is fused as "bert".
FUSION_TYPE_OF = {"gpt2": "gpt2", "bart": "bart", "t5": "t5", "vit": "vit", "clip": "clip", "swin": "swin"}
# The kernels ORT's fusions write: a node of these types the export did not already hold was fused.
FUSED_OP_TYPES = (
    "Attention",
    "MultiHeadAttention",
    "EmbedLayerNormalization",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "LayerNormalization",
    "SimplifiedLayerNormalization",
    "BiasGelu",
    "FastGelu",
    "Gelu",
    "GemmFastGelu",
    "QuickGelu",
    "BiasAdd",
    "RotaryEmbedding",
)
# The int8 kernels ORT's dynamic quantizer writes (QAttention is the fused attention's).
QUANTIZED_OP_TYPES = (
    "QAttention",
    "QEmbedLayerNormalization",
    "DynamicQuantizeLinear",
    "DynamicQuantizeMatMul",
    "MatMulInteger",
)
# optimize_model's graph level: 1 wrote a graph ORT 1.32 refused to load; the session optimizes anyway.
FUSION_OPT_LEVEL = 0
NO_MATCH_HINT = (
    "ORT's fusions match the TorchScript export of eager attention in BERT-, GPT-2- and ViT-like models; "
    "onnx.runtime runs the graph unfused"
)


class FusionSettings(Protocol):
    """What the fusions read of an optimizer's config (FusionsConfig's fields, and the generate loop's)."""

    @property
    def model_type(self) -> str: ...
    @property
    def num_heads(self) -> int: ...
    @property
    def hidden_size(self) -> int: ...


def check_fusion_settings(config: FusionSettings) -> None:
    """A config's fusion fields, validated with the field named (ValueError)."""
    if config.model_type not in ("auto", *FUSION_MODEL_TYPES):
        raise ValueError(
            f"model_type must be auto or one of {', '.join(FUSION_MODEL_TYPES)}, got {config.model_type!r}"
        )
    for name in ("num_heads", "hidden_size"):
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(config, name)}")


@dataclasses.dataclass(frozen=True)
class FusionsConfig(OnnxConfig):
    exporter: str = "torchscript"
    model_type: str = "auto"  # ORT's fusion set; auto: from the transformers config, else bert
    num_heads: int = 0  # 0: the transformers config's, else ORT reads it from the graph
    hidden_size: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.exporter != "torchscript":
            raise ValueError(
                f"exporter must be torchscript (ORT's fusions match its graphs only), got {self.exporter!r}"
            )
        check_fusion_settings(self)


@dataclasses.dataclass(frozen=True)
class FusionsInt8Config(FusionsConfig):
    per_channel: bool = False
    reduce_range: bool = False


def op_counts(path: Path, op_types: tuple[str, ...]) -> collections.Counter[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return collections.Counter(node.op_type for node in graph.node if node.op_type in op_types)


def fused_nodes(before: collections.Counter[str], after: collections.Counter[str]) -> dict[str, int]:
    """Per fused kernel type, how many nodes the fusions added (what the export already held is not counted)."""
    return {op: after[op] - before[op] for op in FUSED_OP_TYPES if after[op] > before[op]}


def fusion_shape(model: Any, config: FusionSettings) -> tuple[str, int, int]:
    """ORT's model type, num_heads and hidden_size: the config's, else the model's transformers config's."""
    hf = getattr(model, "config", None)
    model_type = config.model_type
    if model_type == "auto":
        model_type = FUSION_TYPE_OF.get(str(getattr(hf, "model_type", "")), "bert")
    heads = config.num_heads or int(getattr(hf, "num_attention_heads", 0) or 0)
    hidden = config.hidden_size or int(getattr(hf, "hidden_size", 0) or 0)
    return model_type, heads, hidden


def eager_attention(model: Any) -> tuple[Any, str | None]:
    """The model to export: a copy switched to eager attention when a transformers model runs
    another (SDPA's graph matches no Attention fusion), with the implementation it had; else itself."""
    hf = getattr(model, "config", None)
    current = getattr(hf, "_attn_implementation", None)
    if current in (None, "eager") or not callable(getattr(model, "set_attn_implementation", None)):
        return model, None
    switched = copy.deepcopy(model)
    switched.set_attn_implementation("eager")
    return switched, str(current)


def fuse(
    model: Any,
    fp32_path: Path,
    out_path: Path,
    config: FusionSettings,
    no_match: type[AccelError] = AccelError,
    hint: str = NO_MATCH_HINT,
    shape_inference: bool = True,
) -> dict[str, Any]:
    """ORT's transformer fusions on `model`'s exported graph, written to `out_path`; what the lock
    records. A graph where nothing matched is refused (`no_match`, with `hint`) and its files removed.
    `shape_inference`: ORT's symbolic shape inference between fusions (see fuse_step for where it is off)."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    model_type, heads, hidden = fusion_shape(model, config)
    exported = _export_cache.origin(fp32_path)  # fused once per export: see _export_cache
    settings = repr((exported, "fused", model_type, heads, hidden, FUSION_OPT_LEVEL, shape_inference))
    kept = _export_cache.reuse(model, settings, out_path) if exported is not None else None
    if kept is not None:
        fp32_path.unlink(missing_ok=True)
        return kept
    files_before = {p.name for p in out_path.parent.iterdir()}
    with quiet():
        options = FusionOptions(model_type)
        options.enable_shape_inference = shape_inference
        fused = optimize_model(
            str(fp32_path),
            model_type=model_type,
            num_heads=heads,
            hidden_size=hidden,
            opt_level=FUSION_OPT_LEVEL,
            optimization_options=options,
        )
        fused.save_model_to_file(str(out_path))
    counts = fused_nodes(op_counts(fp32_path, FUSED_OP_TYPES), op_counts(out_path, FUSED_OP_TYPES))
    fp32_path.unlink(missing_ok=True)
    if not counts:
        out_path.unlink(missing_ok=True)
        raise no_match("no transformer subgraph matched (0 fused nodes)", hint)
    state = {
        "fused_nodes": counts,
        "fused_node_count": sum(counts.values()),
        "fusion_model_type": model_type,
        "num_heads": heads,
        "hidden_size": hidden,
    }
    if exported is not None:
        _export_cache.remember(model, settings, out_path, state, files_before)
    return state


class _FusionsBase(_OnnxBase):
    """`onnx.runtime`'s export, session and lock, with the fusions as the graph transform."""

    # The TorchScript export and the fusion pass over the graph: slower than a plain export.
    predicted_setup_calls: ClassVar[float] = 8.0
    predicted_setup_seconds: ClassVar[float] = 4.0

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        reason = super().applicable(pipeline, context)
        if reason is None and not has_attention(pipeline.model):
            # Said before an export is paid for: the fusions match transformer subgraphs only.
            return "the model has no attention layer: no transformer subgraph to fuse"
        return reason

    def apply(self, pipeline: Pipeline, config: OnnxConfig, context: Context) -> Applied:
        exported, switched_from = eager_attention(pipeline.model)
        applied = super().apply(pipeline.replace(model=exported), config, context)
        state = {**applied.state, **({"attention_switched_from": switched_from} if switched_from else {})}
        notes = {**applied.notes, "fused_nodes": state["fused_nodes"]}
        if "quantized_nodes" in state:
            notes["quantized_nodes"] = state["quantized_nodes"]
        return dataclasses.replace(
            applied, pipeline=pipeline.replace(model=applied.pipeline.model), state=state, notes=notes
        )


@register
class OnnxFusions(_FusionsBase):
    name = "onnx.fusions"
    extends = "onnx.runtime"
    cures = ("overhead", "compute_bound")
    description = (
        "ONNX Runtime with its transformer graph fusions (Attention, SkipLayerNorm, BiasGelu...), fp32; "
        "the fused nodes are counted."
    )
    Config = FusionsConfig

    def transform(
        self, pipeline: Pipeline, fp32_path: Path, out_path: Path, config: FusionsConfig
    ) -> tuple[Path, dict[str, Any]]:
        return out_path, fuse(pipeline.model, fp32_path, out_path, config)


@register
class OnnxFusionsInt8(_FusionsBase):
    name = "onnx.fusions_int8"
    numerics: ClassVar[str] = "int8"
    extends = "onnx.int8_dynamic"
    cures = ("compute_bound", "memory_bandwidth")
    description = "ONNX Runtime's fused transformer graph with dynamic int8 quantization (Attention -> QAttention)."
    Config = FusionsInt8Config

    def transform(
        self, pipeline: Pipeline, fp32_path: Path, out_path: Path, config: FusionsInt8Config
    ) -> tuple[Path, dict[str, Any]]:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        fused_path = out_path.with_name(f"{out_path.stem}-fused.onnx")
        state = fuse(pipeline.model, fp32_path, fused_path, config)
        with quiet():
            quantize_dynamic(
                str(fused_path),
                str(out_path),
                weight_type=QuantType.QInt8,
                per_channel=config.per_channel,
                reduce_range=config.reduce_range,
                # the fused kernels carry no type information the quantizer can read
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        fused_path.unlink(missing_ok=True)
        quantized = op_counts(out_path, QUANTIZED_OP_TYPES)
        return out_path, {**state, "quantized_nodes": {op: quantized[op] for op in QUANTIZED_OP_TYPES if quantized[op]}}
