"""OpenVINO: the model converted from PyTorch and run by OpenVINO's CPU plugin.

- `openvino.runtime`: float32 (the precision hint set to f32: on a CPU with a bf16 unit the
  plugin's default is bf16), threads set to torch's count, the latency hint;
- `openvino.int8`: NNCF post-training quantization of the converted model, activation ranges
  calibrated on the pipeline's own first batches (the transformer scheme where the model has
  attention layers); the guard validates it on the batches after them. Its safer variants, when
  the guard refuses it: NNCF's careful settings (SmoothQuant off, the full bias correction), then
  those with the worst tenth and quarter of the Linear layers left in float (NNCF's ignored scope;
  each layer's int8 error measured as for `quantize.int8_dynamic`, _sensitivity). SmoothQuant moves
  activation outliers into the weights: on BERT-base at random init it took the pooler output's
  centered cosine from 0.9996 to 0.9939, below the int8 guard, at the same speed;
- `openvino.bf16`: the float32 graph computed in bf16 (the inference-precision hint), only where
  the machine's calibration measured a fast bf16 unit.

The pipeline's model becomes an `OvModel` (_openvino_io): same call signature, the original output
structure. The lock lists the saved IR (.xml and .bin) with their digests and records the openvino
version; `restore` compiles that IR again, without converting the model. OpenVINO and NNCF are the
`openvino` extra: without them each optimizer is not applicable, with the pip line that installs it.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, ClassVar

import torch

from accel.core.errors import LockError, require
from accel.core.machine import Machine
from accel.core.measure import now
from accel.core.pipeline import Pipeline
from accel.optimizing.optimizers import Applied, Context, Optimizer, register
from accel.optimizing.optimizers._model_io import artifact_name, check_output_structure, has_attention, tensors_only
from accel.optimizing.optimizers._openvino_io import (
    EXTRA,
    PERFORMANCE_HINTS,
    OvModel,
    calibration_feeds,
    check_conversion,
    compile_properties,
    convert,
    module_scope,
    openvino_module,
    openvino_unusable,
    resolve_ir,
    save_ir,
    silenced,
)
from accel.optimizing.optimizers.quantize import KEEP_FLOAT_LADDER, worst_linear_layers

# Batches of the pipeline's own data NNCF calibrates activation ranges on: a few are enough for
# min/max statistics, and each costs a full forward pass at optimize time.
DEFAULT_CALIBRATION_BATCHES = 4
# bf16 is worth trying where the calibrated bf16 kernel ran at least this many times float32's
# rate (as precision.bf16 decides: below it the conversions at the edges eat the gain).
MIN_BF16_SPEEDUP = 1.2
LOCK_STATE_FIELDS = ("input_names", "output_names", "output_structure", "positional_parameters", "input_for")


@dataclasses.dataclass(frozen=True)
class OpenVinoConfig:
    threads: int = 0  # 0: torch's intra-op thread count, so both sides of a comparison match
    hint: str = "LATENCY"  # OpenVINO's PERFORMANCE_HINT; accel calls the model synchronously

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if self.hint not in PERFORMANCE_HINTS:
            raise ValueError(f"hint must be one of {', '.join(PERFORMANCE_HINTS)}, got {self.hint!r}")


@dataclasses.dataclass(frozen=True)
class OpenVinoInt8Config(OpenVinoConfig):
    calibration_batches: int = DEFAULT_CALIBRATION_BATCHES
    preset: str = "performance"  # NNCF's: symmetric activations (performance) or asymmetric (mixed)
    smooth_quant: bool = True  # NNCF's SmoothQuant for transformers (its default)
    fast_bias_correction: bool = True  # NNCF's default; False: the slower, more accurate correction
    keep_float: float = 0.0  # the share of Linear layers with the largest int8 error left in float

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.calibration_batches < 1:
            raise ValueError(f"calibration_batches must be >= 1, got {self.calibration_batches}")
        if self.preset not in ("performance", "mixed"):
            raise ValueError(f"preset must be performance or mixed, got {self.preset!r}")
        if not 0.0 <= self.keep_float < 1.0:
            raise ValueError(f"keep_float must lie in [0, 1), got {self.keep_float}")


class _OpenVinoBase(Optimizer):
    slot: ClassVar[str] = "model"
    # Conversion traces the model like an ONNX export, then the CPU plugin compiles it.
    predicted_setup_calls: ClassVar[float] = 6.0
    predicted_setup_seconds: ClassVar[float] = 3.0
    runtime_packages: ClassVar[tuple[str, ...]] = ("openvino",)
    precision: ClassVar[str] = "f32"
    # Modules beyond openvino the optimizer needs (nncf for int8): all from the same extra.
    needs: ClassVar[tuple[str, ...]] = ()

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        unusable = openvino_unusable(self.name, self.needs, context.machine)
        if unusable is not None:
            return unusable
        if not isinstance(pipeline.model, torch.nn.Module):
            return "the model is not a torch.nn.Module, so OpenVINO cannot convert it"
        if isinstance(pipeline.model, OvModel):
            return "the model already runs in OpenVINO"
        if pipeline.generate is not None:
            return "the pipeline runs a generate loop; conversion covers single forward calls only"
        return tensors_only(pipeline.example_batch())

    def apply(self, pipeline: Pipeline, config: OpenVinoConfig, context: Context) -> Applied:
        started = now()
        model, io = convert(pipeline)
        stem = artifact_name(self.name.replace(".", "-"), pipeline, config)
        threads = config.threads or torch.get_num_threads()
        check_conversion(pipeline, model, io, Path(context.workdir) / f"{stem}-shapes.xml", threads)
        model, transform_state = self.transform(pipeline, model, io, config)
        xml_path = Path(context.workdir) / f"{stem}.xml"
        bin_path = save_ir(model, xml_path)
        properties = compile_properties(threads, config.hint, self.precision)
        compile_started = now()
        runtime = OvModel(xml_path, io, properties)
        compile_seconds = now() - compile_started
        state = {
            **io,
            "xml_file": xml_path.name,
            "bin_file": bin_path.name,
            "compile_properties": properties,
            "openvino_version": openvino_module().__version__,
            **transform_state,
        }
        return Applied(
            pipeline=pipeline.replace(model=runtime),
            state=state,
            setup_seconds=now() - started,
            notes={"compile_properties": properties, "xml_file": str(xml_path)},
            recurring_seconds=compile_seconds,
        )

    def transform(self, pipeline: Pipeline, model: Any, io: dict[str, Any], config: Any) -> tuple[Any, dict[str, Any]]:
        """The graph to run, made from the converted float32 one, and what the lock should record of
        how (the registered optimizer is one shared instance: nothing per run goes on `self`)."""
        return model, {}

    def restore(self, pipeline: Pipeline, config: Any, state: dict[str, Any], lock_dir: Path) -> Pipeline:
        """The IR the lock names, compiled again; the state is data from a lock that may have
        travelled, so anything in it that does not build a compiled model refuses the lock."""
        xml_path = resolve_ir(Path(lock_dir), state)
        check_output_structure(state.get("output_structure"))
        io = {key: state.get(key) for key in LOCK_STATE_FIELDS}
        try:
            model = OvModel(xml_path, io, state.get("compile_properties"))
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
            raise LockError(
                f"the lock's {self.name} state does not build an OpenVINO model: {type(exc).__name__}: "
                f"{str(exc)[:200]}",
                "run accel optimize again",
            ) from exc
        return pipeline.replace(model=model)


@register
class OpenVinoRuntime(_OpenVinoBase):
    name = "openvino.runtime"
    cures = ("overhead", "compute_bound")
    description = "Convert the model to OpenVINO and run it on its CPU plugin (float32, threads set)."
    Config = OpenVinoConfig


@register
class OpenVinoInt8(_OpenVinoBase):
    name = "openvino.int8"
    numerics: ClassVar[str] = "int8"
    extends = "openvino.runtime"
    # The conversion, then NNCF runs a calibration call per batch and quantizes the graph.
    predicted_setup_calls: ClassVar[float] = 12.0
    predicted_setup_seconds: ClassVar[float] = 8.0
    cures = ("compute_bound", "memory_bandwidth")
    description = "OpenVINO with NNCF post-training int8, calibrated on the pipeline's own first batches."
    Config = OpenVinoInt8Config
    needs = ("nncf",)

    def transform(
        self, pipeline: Pipeline, model: Any, io: dict[str, Any], config: OpenVinoInt8Config
    ) -> tuple[Any, dict[str, Any]]:
        nncf = require("nncf", self.name, EXTRA)
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

        feeds = calibration_feeds(pipeline, io["input_names"], config.calibration_batches)
        transformer = has_attention(pipeline.model)
        float_layers = worst_linear_layers(pipeline, config.keep_float, per_channel=True) if config.keep_float else []
        # -1 turns SmoothQuant off for every operation kind (NNCF's documented switch)
        advanced = (
            None
            if config.smooth_quant
            else AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=-1, convolution=-1)
            )
        )
        with silenced():
            quantized = nncf.quantize(
                model,
                nncf.Dataset(feeds),
                preset=getattr(nncf.QuantizationPreset, config.preset.upper()),
                model_type=nncf.ModelType.TRANSFORMER if transformer else None,
                subset_size=len(feeds),
                fast_bias_correction=config.fast_bias_correction,
                ignored_scope=nncf.IgnoredScope(patterns=ignored_patterns(float_layers), validate=False)
                if float_layers
                else None,
                advanced_parameters=advanced,
            )
        state: dict[str, Any] = {
            "calibration_batches": len(feeds),
            "calibrated_on": "source" if pipeline.has_source else "example inputs",
            "model_type": "transformer" if transformer else "default",
            "nncf_version": nncf.__version__,
        }
        if float_layers:
            state["float_layers"] = float_layers
        return quantized, state

    def safer_variants(self, config: OpenVinoInt8Config, machine: Machine) -> list[Any]:
        """NNCF's careful settings (SmoothQuant off, the full bias correction), then those with the
        worst layers left in float (KEEP_FLOAT_LADDER), as its accuracy advice orders them."""
        if config.keep_float:
            return []
        careful = dataclasses.replace(config, smooth_quant=False, fast_bias_correction=False)
        ladder = [] if careful == config else [careful]
        return ladder + [dataclasses.replace(careful, keep_float=share) for share in KEEP_FLOAT_LADDER]


def ignored_patterns(layers: list[str]) -> list[str]:
    """NNCF ignored-scope patterns for the operations of the named torch modules (_openvino_io.module_scope)."""
    return [re.escape(module_scope(name)) + ".*" for name in layers]


@register
class OpenVinoBf16(_OpenVinoBase):
    name = "openvino.bf16"
    numerics: ClassVar[str] = "float16"
    cures = ("compute_bound", "memory_bandwidth")
    description = "OpenVINO computing in bf16 (its inference-precision hint), where the CPU has a fast bf16 unit."
    Config = OpenVinoConfig
    precision = "bf16"

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        reason = super().applicable(pipeline, context)
        if reason is not None:
            return reason
        speedup = context.machine.cure_speedup("bf16")
        if speedup is None:
            return "the machine's calibration did not measure a bf16 unit (run accel calibrate)"
        if speedup[0] < MIN_BF16_SPEEDUP:
            return f"bf16 runs at {speedup[0]:.2f}x of float32 on this CPU (calibrated); needs {MIN_BF16_SPEEDUP}x"
        return None
