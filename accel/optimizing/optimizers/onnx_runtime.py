"""ONNX Runtime: export the model with torch.onnx and run it in an ORT session.

- `onnx.runtime`: fp32, all graph optimizations, threads set to torch's count;
- `onnx.int8_dynamic`: the export quantized with ORT's quantize_dynamic (int8 weights, activations
  quantized per call);
- `onnx.int8_static`: quantize_static, activation ranges calibrated on the pipeline's own source.

The pipeline's model becomes an `OrtModel`: same call signature, torch tensors in and out. ORT's
intra-op pool spins between calls by default, which on a small machine steals the cores of
whatever runs next (it distorted an int8 session's timing about 3x here), so spinning is off
unless asked for; the session options chosen are recorded in the lock.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any, ClassVar

import torch

from accel.core.dtypes import onnx_numpy_dtype
from accel.core.errors import LockError, MissingDependencyError, require
from accel.core.machine import Machine
from accel.core.measure import now
from accel.core.pipeline import Pipeline
from accel.optimizing.lock_files import resolve_lock_file
from accel.optimizing.optimizers import Applied, Context, Optimizer, register
from accel.optimizing.optimizers._keep_float import float_nodes
from accel.optimizing.optimizers._model_io import (
    CalibrationReader,
    artifact_name,
    check_output_structure,
    rebuild_output,
    tensor_count,
    tensors_only,
)
from accel.optimizing.optimizers._onnx_export import EXPORTERS, check_export, export_onnx, input_names_of, quiet
from accel.optimizing.optimizers.quantize import KEEP_FLOAT_LADDER

DEFAULT_OPSET = 17
# Batches of the source used to calibrate activation ranges for static int8.
DEFAULT_CALIBRATION_BATCHES = 8
# Weight types quantize_dynamic takes: QInt8 (U8S8 kernels) or QUInt8 (U8U8). Without VNNI, U8S8's
# 16-bit intermediate sums can saturate (ORT's quantization docs); U8U8 does not.
WEIGHT_TYPES = ("QInt8", "QUInt8")
# ISA flags (accel.core.machine.ISA_FLAGS) with int8 dot-product instructions, where U8S8 does not saturate.
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def _ort() -> Any:
    return require("onnxruntime", "the ONNX Runtime optimizers")


def session_options_dict(threads: int, allow_spinning: bool) -> dict[str, Any]:
    return {
        "graph_optimization_level": "ORT_ENABLE_ALL",
        "intra_op_num_threads": threads,
        "inter_op_num_threads": 1,
        "execution_mode": "ORT_SEQUENTIAL",
        "session.intra_op.allow_spinning": "1" if allow_spinning else "0",
        "session.inter_op.allow_spinning": "1" if allow_spinning else "0",
    }


class OrtModel(torch.nn.Module):
    """An ONNX Runtime session behind the model's call signature: torch tensors in, the original
    output structure out (a ModelOutput comes back as the same class with the same keys).

    `input_for` maps the original forward's parameter names to graph input names, so the drop-in
    takes the inputs positionally or by keyword, as the original did; `positional` names the
    original's positional parameters in order."""

    def __init__(
        self,
        onnx_path: Path,
        input_names: list[str],
        session_options: dict[str, Any],
        structure: dict[str, Any],
        positional: list[str] | None = None,
        input_for: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        ort = _ort()
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, session_options["graph_optimization_level"]
        )
        options.intra_op_num_threads = int(session_options["intra_op_num_threads"])
        options.inter_op_num_threads = int(session_options["inter_op_num_threads"])
        options.execution_mode = getattr(ort.ExecutionMode, session_options["execution_mode"])
        for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
            options.add_session_config_entry(key, str(session_options[key]))
        self.onnx_path = Path(onnx_path)
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.input_names = list(input_names)
        self.structure = structure
        self.positional = list(positional or [])
        self.input_for = dict(input_for or {})
        self.session_options = dict(session_options)
        self.output_names = [o.name for o in self.session.get_outputs()]
        # Inputs the exporter pruned (unused by the graph) are dropped from the feed.
        self._graph_types = {i.name: onnx_numpy_dtype(i.type) for i in self.session.get_inputs()}
        if tensor_count(structure) != len(self.output_names):
            raise ValueError(
                f"the ONNX graph has {len(self.output_names)} outputs, the model's output "
                f"{tensor_count(structure)} tensors"
            )

    def _graph_name(self, parameter: str) -> str:
        return self.input_for.get(parameter, parameter)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        named = [(self.positional[i] if i < len(self.positional) else f"input_{i}", v) for i, v in enumerate(args)]
        feeds = {}
        for parameter, value in [*named, *kwargs.items()]:
            name = self._graph_name(parameter)
            if value is None:
                continue  # left at its default, as the export did
            if name not in self._graph_types:
                if name in self.input_names:
                    continue  # exported, then pruned: the graph does not use it
                raise TypeError(
                    f"the exported model has no input {parameter!r} (it was exported with "
                    f"{', '.join(self.input_names)}); optimize again with it in the example batch"
                )
            array = value.detach().cpu().contiguous().numpy()
            wanted = self._graph_types[name]
            feeds[name] = array if wanted is None or array.dtype == wanted else array.astype(wanted)
        outputs = self.session.run(self.output_names, feeds)
        return rebuild_output(self.structure, [torch.from_numpy(o) for o in outputs])

    @property
    def threads(self) -> int:
        """The session's intra-op thread count."""
        return int(self.session_options["intra_op_num_threads"])

    def rethreaded(self, threads: int) -> OrtModel:
        """The same graph in a new session at `threads` intra-op threads (runtime.threads)."""
        options = {**self.session_options, "intra_op_num_threads": threads}
        return OrtModel(self.onnx_path, self.input_names, options, self.structure, self.positional, self.input_for)

    @property
    def spinning(self) -> bool:
        """Whether the session's intra-op threads spin-wait for work between ops (ORT's default;
        off in the sessions accel builds, so an idle pool leaves the cores to whatever runs next)."""
        return str(self.session_options.get("session.intra_op.allow_spinning", "1")) == "1"

    def respun(self, spinning: bool) -> OrtModel:
        """The same graph in a new session whose threads spin between ops, or do not (runtime.spinning)."""
        flag = "1" if spinning else "0"
        options = {
            **self.session_options,
            "session.intra_op.allow_spinning": flag,
            "session.inter_op.allow_spinning": flag,
        }
        return OrtModel(self.onnx_path, self.input_names, options, self.structure, self.positional, self.input_for)

    def extra_repr(self) -> str:
        spin = ", spinning" if self.spinning else ""
        return f"{self.onnx_path.name}, threads={self.session_options['intra_op_num_threads']}{spin}"


@dataclasses.dataclass(frozen=True)
class OnnxConfig:
    opset: int = DEFAULT_OPSET
    threads: int = 0  # 0: torch's intra-op thread count, so both sides of a comparison match
    allow_spinning: bool = False
    exporter: str = "auto"  # see choose_exporter

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if self.exporter not in EXPORTERS:
            raise ValueError(f"exporter must be one of {', '.join(EXPORTERS)}, got {self.exporter!r}")
        if not (9 <= self.opset <= 23):
            raise ValueError(f"opset must lie in 9..23, got {self.opset}")


@dataclasses.dataclass(frozen=True)
class OnnxInt8DynamicConfig(OnnxConfig):
    per_channel: bool = False
    reduce_range: bool = False
    weight_type: str = "QInt8"
    # The share of the Linear layers left in float (their MatMul/Gemm nodes excluded from the
    # quantizer), those whose int8 output differs most on the example batch: the ladder's last rungs.
    keep_float: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weight_type not in WEIGHT_TYPES:
            raise ValueError(f"weight_type must be one of {', '.join(WEIGHT_TYPES)}, got {self.weight_type!r}")
        if not 0.0 <= self.keep_float < 1.0:
            raise ValueError(f"keep_float must lie in [0, 1), got {self.keep_float!r}")


@dataclasses.dataclass(frozen=True)
class OnnxInt8StaticConfig(OnnxConfig):
    per_channel: bool = True
    reduce_range: bool = False
    calibration_batches: int = DEFAULT_CALIBRATION_BATCHES
    calibration_method: str = "MinMax"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.calibration_batches < 1:
            raise ValueError(f"calibration_batches must be >= 1, got {self.calibration_batches}")
        if self.calibration_method not in ("MinMax", "Entropy", "Percentile"):
            raise ValueError(
                f"calibration_method must be MinMax, Entropy or Percentile, got {self.calibration_method!r}"
            )


def _legacy_structure(state: dict[str, Any]) -> dict[str, Any]:
    """Locks written before output structures were recorded: a tensor, or a tuple of them."""
    if state.get("single_output", True):
        return {"kind": "tensor"}
    return {"kind": "tuple", "items": [{"kind": "tensor"} for _ in state.get("output_names", [])]}


def ort_model(path: Path, state: dict[str, Any], options: dict[str, Any]) -> OrtModel:
    return OrtModel(
        path,
        state["input_names"],
        options,
        state.get("output_structure") or _legacy_structure(state),
        state.get("positional_parameters"),
        state.get("input_for"),
    )


def ort_unusable(context: Context) -> str | None:
    """Why ONNX Runtime cannot run the model here (not installed; the model on a GPU), or None."""
    try:
        _ort()
    except MissingDependencyError as exc:
        return exc.message
    if context.machine.is_cuda:
        return "accel runs ONNX Runtime on the CPU provider only; the model is on a GPU"
    return None


class _OnnxBase(Optimizer):
    slot: ClassVar[str] = "model"
    runtime_packages: ClassVar[tuple[str, ...]] = ("onnxruntime", "onnx")
    suffix: ClassVar[str] = "fp32"
    # An export traces the model (a few calls' worth) and builds a session; imports cost seconds.
    predicted_setup_calls: ClassVar[float] = 6.0
    predicted_setup_seconds: ClassVar[float] = 2.0

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        unusable = ort_unusable(context)
        if unusable is not None:
            return unusable
        if not isinstance(pipeline.model, torch.nn.Module):
            return "the model is not a torch.nn.Module, so torch.onnx cannot export it"
        if isinstance(pipeline.model, OrtModel):
            return "the model already runs in ONNX Runtime"
        if pipeline.generate is not None:
            return "the pipeline runs a generate loop; export covers single forward calls only"
        return tensors_only(pipeline.example_batch())

    def apply(self, pipeline: Pipeline, config: OnnxConfig, context: Context) -> Applied:
        started = now()
        stem = artifact_name(self.name.replace(".", "-"), pipeline, config)
        fp32_path = Path(context.workdir) / f"{stem}-fp32.onnx"
        io = export_onnx(pipeline, fp32_path, opset=config.opset, requested=config.exporter)
        threads = config.threads or torch.get_num_threads()
        options = session_options_dict(threads, config.allow_spinning)
        # The float32 export is checked, before any quantization blurs what it computes.
        check_export(pipeline, lambda: ort_model(fp32_path, io, options))
        final_path, transform_state = self.transform(
            pipeline, fp32_path, Path(context.workdir) / f"{stem}.onnx", config
        )
        session_started = now()
        model = ort_model(final_path, io, options)
        session_seconds = now() - session_started
        state = {
            **io,
            "onnx_file": final_path.name,
            "session_options": options,
            "onnxruntime_version": _ort().__version__,
            **transform_state,
        }
        return Applied(
            pipeline=pipeline.replace(model=model),
            state=state,
            setup_seconds=now() - started,
            notes={"session_options": options, "onnx_file": str(final_path)},
            recurring_seconds=session_seconds,
        )

    def transform(
        self, pipeline: Pipeline, fp32_path: Path, out_path: Path, config: Any
    ) -> tuple[Path, dict[str, Any]]:
        """The model to run, made from the fp32 export, and what the lock should record of how.

        The registered optimizer is one shared instance: per-run facts go in the returned state,
        never on `self`.
        """
        shutil.move(str(fp32_path), out_path)
        return out_path, {}

    def restore(self, pipeline: Pipeline, config: Any, state: dict[str, Any], lock_dir: Path) -> Pipeline:
        """The ONNX file the lock names, in an ORT session; the state is data from a lock that may
        have travelled, so anything in it that does not build a session refuses the lock."""
        path = resolve_lock_file(Path(lock_dir), state.get("onnx_file"), "onnx_file")
        if path.suffix != ".onnx":
            raise LockError(f"the lock's onnx_file {path.name!r} is not an .onnx file", "run accel optimize again")
        check_output_structure(state.get("output_structure") or _legacy_structure(state))
        options = state.get("session_options") or session_options_dict(torch.get_num_threads(), False)
        try:
            model = ort_model(path, state, options)
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:  # ORT's Fail is a RuntimeError
            raise LockError(
                f"the lock's {self.name} state does not build an ONNX Runtime session: {type(exc).__name__}: "
                f"{str(exc)[:200]}",
                "run accel optimize again",
            ) from exc
        return pipeline.replace(model=model)


@register
class OnnxRuntime(_OnnxBase):
    name = "onnx.runtime"
    cures = ("overhead", "compute_bound")  # MLAS fp32 GEMMs, where they calibrate faster than eager
    description = "Export with torch.onnx and run in ONNX Runtime (fp32, all graph optimizations, threads set)."
    Config = OnnxConfig


@register
class OnnxInt8Dynamic(_OnnxBase):
    name = "onnx.int8_dynamic"
    numerics: ClassVar[str] = "int8"
    extends = "onnx.runtime"
    cures = ("compute_bound", "memory_bandwidth")
    description = "ONNX Runtime with int8 weights and per-call activation quantization (quantize_dynamic)."
    Config = OnnxInt8DynamicConfig
    predicted_setup_calls: ClassVar[float] = 8.0  # the export, then a pass over its weights

    def transform(
        self, pipeline: Pipeline, fp32_path: Path, out_path: Path, config: OnnxInt8DynamicConfig
    ) -> tuple[Path, dict[str, Any]]:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        excluded, state = float_nodes(pipeline, fp32_path, config)
        with quiet():
            quantize_dynamic(
                str(fp32_path),
                str(out_path),
                weight_type=getattr(QuantType, config.weight_type),
                per_channel=config.per_channel,
                reduce_range=config.reduce_range,
                nodes_to_exclude=excluded,
            )
        fp32_path.unlink(missing_ok=True)
        return out_path, state

    def safer_variants(self, config: OnnxInt8DynamicConfig, machine: Machine) -> list[Any]:
        """Per-channel weights, then a 7-bit range, then (without VNNI) U8U8 weights: each on top
        of the one before, as ORT's quantization docs advise where int8 loses accuracy."""
        steps: list[dict[str, Any]] = [{"per_channel": True}, {"reduce_range": True}]
        if "avx2" in machine.isa_flags and not any(flag in machine.isa_flags for flag in VNNI_FLAGS):
            steps.append({"weight_type": "QUInt8"})
        if config.keep_float:
            return []
        return _ladder(config, steps + [{"keep_float": share} for share in KEEP_FLOAT_LADDER])


@register
class OnnxInt8Static(_OnnxBase):
    name = "onnx.int8_static"
    numerics: ClassVar[str] = "int8"
    extends = "onnx.runtime"
    cures = ("compute_bound", "memory_bandwidth")
    description = "ONNX Runtime int8 (QDQ) with activation ranges calibrated on the pipeline's own source samples."
    Config = OnnxInt8StaticConfig
    predicted_setup_calls: ClassVar[float] = 6.0 + DEFAULT_CALIBRATION_BATCHES  # and a calibration call a batch

    def transform(
        self, pipeline: Pipeline, fp32_path: Path, out_path: Path, config: OnnxInt8StaticConfig
    ) -> tuple[Path, dict[str, Any]]:
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        graph_inputs = [i.name for i in onnx.load(str(fp32_path), load_external_data=False).graph.input]
        names = input_names_of(pipeline.example_batch())
        reader = CalibrationReader(pipeline, names, config.calibration_batches)
        for feed in reader.feeds:
            for name in list(feed):
                if name not in graph_inputs:
                    del feed[name]
        with quiet():
            quantize_static(
                str(fp32_path),
                str(out_path),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=config.per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                reduce_range=config.reduce_range,
                calibrate_method=getattr(CalibrationMethod, config.calibration_method),
            )
        fp32_path.unlink(missing_ok=True)
        return out_path, {
            "calibration_batches": len(reader.feeds),
            "calibrated_on": "source" if pipeline.has_source else "example inputs",
        }

    def safer_variants(self, config: OnnxInt8StaticConfig, machine: Machine) -> list[Any]:
        """Per-channel weights, then a 7-bit range (U8S8 without VNNI can saturate)."""
        return _ladder(config, [{"per_channel": True}, {"reduce_range": True}])


def _ladder(config: Any, steps: list[dict[str, Any]]) -> list[Any]:
    """Configs, each with one more of `steps`' changes than the one before; those equal to
    `config` or to an earlier rung left out."""
    rungs: list[Any] = []
    current = config
    for change in steps:
        current = dataclasses.replace(current, **change)
        if current != config and current not in rungs:
            rungs.append(current)
    return rungs
