"""Generate loops in OpenVINO: the decode step onnx.generate exports (its KV cache as explicit
tensors), compiled by OpenVINO's CPU plugin and looped by accel with the pipeline's own settings.

- `openvino.generate`: the step in float32 (the inference-precision hint set to f32, so the
  plugin computes what the export computes and the exact guard's tokens can hold), threads set;
- `openvino.generate_int8`: the step's weights compressed by NNCF (`nncf.compress_weights`,
  INT8_ASYM per channel: OpenVINO's documented way for LLM weights), activations in float;
  `mode` int4_asym/int4_sym for 4-bit groups (8-bit is then its safer variant).

One loop serves both runtimes: the model becomes an `OvGenerator` whose `generate()` resolves the
settings as transformers does and runs onnx_generate.greedy_decode over an `OvModel` step (the same
inputs and outputs as the ORT session's). Settings that change which token is picked (beam search,
sampling, penalties), encoder-decoders and hand-written loops are not applicable, with the reason
onnx.generate gives. The lock lists the saved IR (.xml and .bin) with their digests and records the
openvino version; `restore` compiles that IR again, without exporting. OpenVINO and NNCF are the
`openvino` extra: without them each is not applicable, with the pip line that installs it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import torch

from accel.core.errors import AccelError, require
from accel.core.measure import now
from accel.core.pipeline import Pipeline
from accel.optimizing.optimizers import Applied, Context, Optimizer, register
from accel.optimizing.optimizers._generate_settings import GenerateCall, resolve_greedy
from accel.optimizing.optimizers._generate_step import CacheLayout, SteppedLoop, export_step
from accel.optimizing.optimizers._model_io import artifact_name
from accel.optimizing.optimizers._openvino_io import (
    EXTRA,
    PERFORMANCE_HINTS,
    OvModel,
    compile_properties,
    openvino_module,
    openvino_unusable,
    resolve_ir,
    save_ir,
    silenced,
)
from accel.optimizing.optimizers.onnx_generate import OrtGenerator, _GenerateBase, greedy_decode, restored_loop
from accel.optimizing.optimizers.onnx_runtime import DEFAULT_OPSET

# NNCF's weight compression modes accel offers: 8-bit per channel, 4-bit in groups.
COMPRESSION_MODES = ("int8_asym", "int8_sym", "int4_asym", "int4_sym")
# Precisions the CPU plugin reports for a matmul that reads compressed weights.
LOW_PRECISIONS = ("u8", "i8", "u4", "i4")


@dataclasses.dataclass(frozen=True)
class OvGenerateConfig:
    opset: int = DEFAULT_OPSET
    threads: int = 0  # 0: torch's intra-op thread count, so both sides of a comparison match
    hint: str = "LATENCY"  # OpenVINO's PERFORMANCE_HINT; the loop calls the step synchronously

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if not (14 <= self.opset <= 23):
            raise ValueError(f"opset must lie in 14..23 (the step's attention needs 14), got {self.opset}")
        if self.hint not in PERFORMANCE_HINTS:
            raise ValueError(f"hint must be one of {', '.join(PERFORMANCE_HINTS)}, got {self.hint!r}")


@dataclasses.dataclass(frozen=True)
class OvGenerateInt8Config(OvGenerateConfig):
    mode: str = "int8_asym"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in COMPRESSION_MODES:
            raise ValueError(f"mode must be one of {', '.join(COMPRESSION_MODES)}, got {self.mode!r}")


def _step_call(layout: CacheLayout) -> dict[str, Any]:
    """The step's inputs and outputs as OvModel takes them: fed by name, a flat tuple out."""
    return {
        "input_names": layout.input_names,
        "output_structure": {"kind": "tuple", "items": [{"kind": "tensor"} for _ in layout.output_names]},
    }


class OvGenerator(SteppedLoop):
    """A causal LM's generate() run by accel over a decode step compiled by OpenVINO.

    `source` is the original model: its generation_config and config resolve the settings a call
    asks for (its forward is never called). `step` is the compiled step behind the step's inputs."""

    def __init__(self, xml_path: Path, layout: CacheLayout, properties: Any, source: Any) -> None:
        self.layout = layout
        self.step = OvModel(xml_path, _step_call(layout), properties)
        self.source = source
        # What a pipeline's generate function may read off the model it is handed.
        self.config = source.config
        self.generation_config = source.generation_config
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    @property
    def xml_path(self) -> Path:
        return self.step.xml_path

    @property
    def output_names(self) -> list[str]:
        return [port.get_any_name() for port in self.step.compiled.outputs]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "this model runs generate() only: accel replaced its forward with an OpenVINO decode step looped by "
            "generate()"
        )

    __call__ = forward

    def generate(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        greedy = resolve_greedy(self.source, GenerateCall(args, kwargs))
        if isinstance(greedy, str):
            raise AccelError(f"openvino.generate cannot run this generate() call: {greedy}", "remove openvino.generate")
        return greedy_decode(self.step, self.layout, greedy)

    def compressed_matmuls(self) -> int:
        """The compiled step's matmul layers (FullyConnected) that read compressed weights: the CPU
        plugin reports them at u8/i8 (u4/i4) precision; other layers' u8 is a boolean mask's."""
        count = 0
        for op in self.step.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if "layerType" not in info or str(info["layerType"].astype(str)) != "FullyConnected":
                continue
            count += "runtimePrecision" in info and str(info["runtimePrecision"].astype(str)) in LOW_PRECISIONS
        return count

    def __repr__(self) -> str:
        return f"OvGenerator({self.xml_path.name}, layers={self.layout.layers})"


class _OvGenerateBase(Optimizer):
    slot: ClassVar[str] = "model"
    cures = ("generation", "overhead")
    runtime_packages: ClassVar[tuple[str, ...]] = ("openvino", "onnx", "transformers")
    Config: ClassVar[type] = OvGenerateConfig
    # The TorchScript export of the step, reading it and the CPU plugin's compile.
    predicted_setup_calls: ClassVar[float] = 2.0
    predicted_setup_seconds: ClassVar[float] = 5.0
    needs: ClassVar[tuple[str, ...]] = ()

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        unusable = openvino_unusable(self.name, self.needs, context.machine)
        if unusable is not None:
            return unusable
        if pipeline.generate is None:
            return "the pipeline has no generate loop (openvino.runtime converts single forward calls)"
        if isinstance(pipeline.model, (OvGenerator, OrtGenerator)):
            return "the generate loop already runs in a graph runtime"
        greedy = _GenerateBase._greedy(pipeline)  # onnx.generate's reasons, one place
        return greedy if isinstance(greedy, str) else None

    def apply(self, pipeline: Pipeline, config: OvGenerateConfig, context: Context) -> Applied:
        started = now()
        greedy = _GenerateBase._greedy(pipeline)
        if isinstance(greedy, str):
            raise AccelError(f"{self.name} does not apply: {greedy}", "leave it out of the recipe")
        ov = openvino_module()
        stem = artifact_name(self.name.replace(".", "-"), pipeline, config)
        onnx_path = Path(context.workdir) / f"{stem}-step.onnx"
        layout = export_step(pipeline.model, greedy.input_ids, onnx_path, opset=config.opset)
        try:
            graph, transform_state = self.transform(ov.Core().read_model(str(onnx_path)), config)
            xml_path = Path(context.workdir) / f"{stem}.xml"
            bin_path = save_ir(graph, xml_path)
        finally:
            onnx_path.unlink(missing_ok=True)
        properties = compile_properties(config.threads or torch.get_num_threads(), config.hint, "f32")
        compile_started = now()
        model = OvGenerator(xml_path, layout, properties, pipeline.model)
        compile_seconds = now() - compile_started
        compressed = model.compressed_matmuls()
        state = {
            "xml_file": xml_path.name,
            "bin_file": bin_path.name,
            "cache_layout": layout.to_dict(),
            "compile_properties": properties,
            "opset": config.opset,
            "openvino_version": ov.__version__,
            **transform_state,
        }
        return Applied(
            pipeline=pipeline.replace(model=model),
            state=state,
            setup_seconds=now() - started,
            notes={"xml_file": str(xml_path), "compile_properties": properties, "compressed_matmuls": compressed},
            recurring_seconds=compile_seconds,
        )

    def transform(self, graph: Any, config: Any) -> tuple[Any, dict[str, Any]]:
        """The step to compile, made from the float32 one read from the export, and what the lock
        records of how."""
        return graph, {}

    def restore(self, pipeline: Pipeline, config: Any, state: dict[str, Any], lock_dir: Path) -> Pipeline:
        """The IR the lock names, compiled again behind the pipeline's own model; the state is data
        from a lock that may have travelled, so anything in it that does not build refuses it."""
        xml_path = resolve_ir(Path(lock_dir), state)
        properties = state.get("compile_properties")
        return restored_loop(
            self.name,
            pipeline,
            state,
            xml_path,
            "an OpenVINO model",
            lambda layout: OvGenerator(xml_path, layout, properties, pipeline.model),
            lambda model: model.output_names,
        )


@register
class OpenVinoGenerate(_OvGenerateBase):
    name = "openvino.generate"
    extends = "generation.kv_cache"
    description = (
        "The generate loop in OpenVINO: the decode step exported with explicit past/present KV tensors, "
        "compiled by the CPU plugin in float32 and looped greedily by accel."
    )
    Config = OvGenerateConfig


@register
class OpenVinoGenerateInt8(_OvGenerateBase):
    name = "openvino.generate_int8"
    numerics: ClassVar[str] = "int8"
    extends = "openvino.generate"
    description = (
        "The generate loop in OpenVINO with the decode step's weights compressed to int8 by NNCF "
        "(compress_weights), activations in float."
    )
    Config = OvGenerateInt8Config
    needs = ("nncf",)
    predicted_setup_calls: ClassVar[float] = 3.0  # the export, then a pass over its weights

    def transform(self, graph: Any, config: OvGenerateInt8Config) -> tuple[Any, dict[str, Any]]:
        nncf = require("nncf", self.name, EXTRA)
        with silenced():
            compressed = nncf.compress_weights(graph, mode=getattr(nncf.CompressWeightsMode, config.mode.upper()))
        return compressed, {"compression_mode": config.mode, "nncf_version": nncf.__version__}

    def safer_variants(self, config: OvGenerateInt8Config, machine: Any) -> list[Any]:
        """8-bit per-channel weights when 4-bit groups failed the guard (as onnx.generate_weight_only)."""
        if config.mode.startswith("int4"):
            return [dataclasses.replace(config, mode="int8_asym")]
        return []
