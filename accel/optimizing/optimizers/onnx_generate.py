"""Generate loops in ONNX Runtime: the decode step exported with its KV cache as explicit tensors,
looped by accel with the pipeline's own generation settings.

- `onnx.generate`: the step in fp32;
- `onnx.generate_int8`: the step quantized with ORT's quantize_dynamic (int8 weights, activations
  quantized per call);
- `onnx.generate_weight_only`: the step's weights as MatMulNBits, 4- or 8-bit blockwise
  (`onnx.weight_only`'s rewrite and quantizer), activations in float; not applicable when the
  Linear/Conv1D weights fit in the machine's largest cache (decode streams every weight per token,
  which pays only when they are not cached).

The pipeline's generate function is left unchanged: the model it is handed becomes an
`OrtGenerator`, whose `generate(ids, **settings)` resolves the settings as transformers does
(accel.optimizing.optimizers._generate_settings) and decodes greedily through the ONNX step
(`_generate_step`): the prompt with an empty past, then one token at a time with the presents of the
step before, end-of-sequence and pad tokens handled as transformers' greedy loop handles them. It
returns what generate() returns, the token ids. Settings that change which token is picked (beam
search, sampling, penalties) make it not applicable, with the setting named. The guard compares
the tokens out exactly, so a step whose rounding picks another token anywhere is reverted.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch

from accel.core.errors import AccelError, LockError
from accel.core.measure import now
from accel.core.pipeline import Pipeline
from accel.optimizing.lock_files import resolve_lock_file
from accel.optimizing.optimizers import Applied, Context, Optimizer, register
from accel.optimizing.optimizers._generate_settings import GenerateCall, Greedy, probe_generate_call, resolve_greedy
from accel.optimizing.optimizers._generate_step import CacheLayout, SteppedLoop, decoder_problem, export_step
from accel.optimizing.optimizers._model_io import artifact_name
from accel.optimizing.optimizers._onnx_export import quiet
from accel.optimizing.optimizers._weight_only import (
    DEFAULT_ACCURACY_LEVEL,
    DEFAULT_BLOCK_SIZE,
    check_settings,
    fits_in_cache,
    quantize_weights,
)
from accel.optimizing.optimizers.onnx_runtime import DEFAULT_OPSET, OrtModel, _ort, ort_unusable, session_options_dict

# The int8 kernels ORT's dynamic quantizer writes: counted, so the lock and notes say what was quantized.
QUANTIZED_OP_TYPES = ("DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul", "QGemm")


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    opset: int = DEFAULT_OPSET
    threads: int = 0  # 0: torch's intra-op thread count, so both sides of a comparison match
    allow_spinning: bool = False

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0, got {self.threads}")
        if not (14 <= self.opset <= 23):
            raise ValueError(f"opset must lie in 14..23 (the step's attention needs 14), got {self.opset}")


@dataclasses.dataclass(frozen=True)
class GenerateInt8Config(GenerateConfig):
    per_channel: bool = False
    reduce_range: bool = False


@dataclasses.dataclass(frozen=True)
class GenerateWeightOnlyConfig(GenerateConfig):
    bits: int = 4
    block_size: int = DEFAULT_BLOCK_SIZE
    symmetric: bool = True
    accuracy_level: int = DEFAULT_ACCURACY_LEVEL

    def __post_init__(self) -> None:
        super().__post_init__()
        check_settings(self)


def _step_output_structure(layout: CacheLayout) -> dict[str, Any]:
    return {"kind": "tuple", "items": [{"kind": "tensor"} for _ in layout.output_names]}


class OrtGenerator(SteppedLoop):
    """A causal LM's generate() run by accel over an ONNX decode step in ONNX Runtime.

    `source` is the original model: its generation_config and config resolve the settings a call
    asks for (its forward is never called). `step` is the ORT session behind the step's inputs."""

    def __init__(self, onnx_path: Path, layout: CacheLayout, session_options: dict[str, Any], source: Any) -> None:
        self.layout = layout
        self.step = OrtModel(onnx_path, layout.input_names, session_options, _step_output_structure(layout))
        self.source = source
        # What a pipeline's generate function may read off the model it is handed.
        self.config = source.config
        self.generation_config = source.generation_config
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    @property
    def onnx_path(self) -> Path:
        return self.step.onnx_path

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            "this model runs generate() only: accel replaced its forward with an ONNX decode step looped by generate()"
        )

    def generate(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        greedy = resolve_greedy(self.source, GenerateCall(args, kwargs))
        if isinstance(greedy, str):
            raise AccelError(f"onnx.generate cannot run this generate() call: {greedy}", "remove onnx.generate")
        return greedy_decode(self.step, self.layout, greedy)

    def __repr__(self) -> str:
        return f"OrtGenerator({self.onnx_path.name}, layers={self.layout.layers})"


def greedy_decode(step: Any, layout: CacheLayout, greedy: Greedy) -> torch.Tensor:
    """transformers' greedy loop over the ONNX step: the prompt, then one token a step until every
    sequence has ended (eos; later tokens are pad) or the length limit is reached."""
    tokens = greedy.input_ids
    batch = tokens.shape[0]
    mask = greedy.attention_mask
    past = [torch.zeros(batch, layout.kv_heads, 0, layout.head_dim) for _ in layout.past_names]
    fed = tokens
    # generate()'s positions: counted over the prompt's real tokens (pads at 0), then one more a step
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    unfinished = torch.ones(batch, dtype=torch.bool)
    eos = torch.tensor(greedy.eos_token_ids, dtype=torch.long)
    while True:
        length = tokens.shape[1]
        outputs = step(input_ids=fed, attention_mask=mask, position_ids=positions, **dict(zip(layout.past_names, past)))
        logits, past = outputs[0], list(outputs[1:])
        if eos.numel() and length < greedy.min_length:
            logits[:, eos] = -float("inf")  # transformers' MinLengthLogitsProcessor
        chosen = torch.argmax(logits, dim=-1)
        if eos.numel():
            chosen = torch.where(unfinished, chosen, torch.full_like(chosen, greedy.pad_token_id or 0))
            unfinished &= ~torch.isin(chosen, eos)
        tokens = torch.cat([tokens, chosen[:, None]], dim=-1)
        if tokens.shape[1] >= greedy.max_length or not bool(unfinished.any()):
            return tokens
        fed = chosen[:, None]
        mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=-1)
        positions = positions[:, -1:] + 1


def restored_loop(
    name: str,
    pipeline: Pipeline,
    state: dict[str, Any],
    file: Path,
    runtime: str,
    build: Callable[[CacheLayout], Any],
    output_names: Callable[[Any], list[str]],
) -> Pipeline:
    """The pipeline with a lock's generate loop (`build` from the lock's cache layout) behind its own
    model; the state is data from a lock that may have travelled, so anything in it that does not
    build `runtime`, or builds a step with other outputs than the layout's, refuses the lock."""
    problem = decoder_problem(pipeline.model)
    if problem is not None:
        raise LockError(f"the lock's {name} entry needs a causal LM: {problem}", "run accel optimize again")
    try:
        layout = CacheLayout.from_dict(state.get("cache_layout"))
        model = build(layout)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise LockError(
            f"the lock's {name} state does not build {runtime}: {type(exc).__name__}: {str(exc)[:200]}",
            "run accel optimize again",
        ) from exc
    if output_names(model) != layout.output_names:
        raise LockError(
            f"the lock's {file.name} has outputs {output_names(model)[:3]}..., not the decode step's",
            "run accel optimize again",
        )
    return pipeline.replace(model=model)


class _GenerateBase(Optimizer):
    slot: ClassVar[str] = "model"
    cures = ("generation", "overhead")
    runtime_packages: ClassVar[tuple[str, ...]] = ("onnxruntime", "onnx", "transformers")
    Config: ClassVar[type] = GenerateConfig
    # The TorchScript export of the step and a session; one loop's worth of calls, a few seconds of imports.
    predicted_setup_calls: ClassVar[float] = 2.0
    predicted_setup_seconds: ClassVar[float] = 4.0

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        unusable = ort_unusable(context)
        if unusable is not None:
            return unusable
        if pipeline.generate is None:
            return "the pipeline has no generate loop (onnx.runtime exports single forward calls)"
        if isinstance(pipeline.model, OrtGenerator):
            return "the generate loop already runs in ONNX Runtime"
        greedy = self._greedy(pipeline)
        return greedy if isinstance(greedy, str) else None

    @staticmethod
    def _greedy(pipeline: Pipeline) -> Greedy | str:
        problem = decoder_problem(pipeline.model)
        if problem is not None:
            return problem
        call = probe_generate_call(pipeline)
        return call if isinstance(call, str) else resolve_greedy(pipeline.model, call)

    def apply(self, pipeline: Pipeline, config: GenerateConfig, context: Context) -> Applied:
        started = now()
        greedy = self._greedy(pipeline)
        if isinstance(greedy, str):
            raise AccelError(f"{self.name} does not apply: {greedy}", "leave it out of the recipe")
        stem = artifact_name(self.name.replace(".", "-"), pipeline, config)
        fp32_path = Path(context.workdir) / f"{stem}-fp32.onnx"
        layout = export_step(pipeline.model, greedy.input_ids, fp32_path, opset=config.opset)
        final_path, transform_state = self.transform(
            pipeline, fp32_path, Path(context.workdir) / f"{stem}.onnx", config
        )
        options = session_options_dict(config.threads or torch.get_num_threads(), config.allow_spinning)
        session_started = now()
        model = OrtGenerator(final_path, layout, options, pipeline.model)
        session_seconds = now() - session_started
        state = {
            "onnx_file": final_path.name,
            "cache_layout": layout.to_dict(),
            "session_options": options,
            "opset": config.opset,
            "onnxruntime_version": _ort().__version__,
            **transform_state,
        }
        return Applied(
            pipeline=pipeline.replace(model=model),
            state=state,
            setup_seconds=now() - started,
            notes={"onnx_file": str(final_path), "session_options": options, **transform_state},
            recurring_seconds=session_seconds,
        )

    def transform(
        self, pipeline: Pipeline, fp32_path: Path, out_path: Path, config: Any
    ) -> tuple[Path, dict[str, Any]]:
        """The step to run, made from the fp32 export of `pipeline`'s model, and what the lock records of how."""
        shutil.move(str(fp32_path), out_path)
        return out_path, {}

    def restore(self, pipeline: Pipeline, config: Any, state: dict[str, Any], lock_dir: Path) -> Pipeline:
        """The step the lock names, in an ORT session behind the pipeline's own model; the state is
        data from a lock that may have travelled, so anything in it that does not build refuses it."""
        path = resolve_lock_file(Path(lock_dir), state.get("onnx_file"), "onnx_file")
        if path.suffix != ".onnx":
            raise LockError(f"the lock's onnx_file {path.name!r} is not an .onnx file", "run accel optimize again")
        options = state.get("session_options") or session_options_dict(torch.get_num_threads(), False)
        return restored_loop(
            self.name,
            pipeline,
            state,
            path,
            "an ONNX Runtime session",  # ORT's Fail is a RuntimeError
            lambda layout: OrtGenerator(path, layout, options, pipeline.model),
            lambda model: model.step.output_names,
        )


@register
class OnnxGenerate(_GenerateBase):
    name = "onnx.generate"
    extends = "generation.kv_cache"
    description = (
        "The generate loop in ONNX Runtime: the decode step exported with explicit past/present KV tensors, "
        "looped greedily by accel (fp32)."
    )
    Config = GenerateConfig


@register
class OnnxGenerateInt8(_GenerateBase):
    name = "onnx.generate_int8"
    numerics: ClassVar[str] = "int8"
    extends = "onnx.generate"
    description = "The generate loop in ONNX Runtime with the decode step quantized to int8 (quantize_dynamic)."
    Config = GenerateInt8Config
    predicted_setup_calls: ClassVar[float] = 3.0  # the export, then a pass over its weights

    def transform(
        self, pipeline: Pipeline, fp32_path: Path, out_path: Path, config: GenerateInt8Config
    ) -> tuple[Path, dict[str, Any]]:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with quiet():
            quantize_dynamic(
                str(fp32_path),
                str(out_path),
                weight_type=QuantType.QInt8,
                per_channel=config.per_channel,
                reduce_range=config.reduce_range,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        fp32_path.unlink(missing_ok=True)
        graph = onnx.load(str(out_path), load_external_data=False).graph
        counts = {op: sum(node.op_type == op for node in graph.node) for op in QUANTIZED_OP_TYPES}
        return out_path, {"quantized_nodes": {op: n for op, n in counts.items() if n}}

    def safer_variants(self, config: GenerateInt8Config, machine: Any) -> list[Any]:
        """Per-channel weights, then a 7-bit range on top, as ORT's quantization docs advise."""
        rungs = [dataclasses.replace(config, per_channel=True)]
        rungs.append(dataclasses.replace(rungs[0], reduce_range=True))
        return [rung for rung in rungs if rung != config]


@register
class OnnxGenerateWeightOnly(_GenerateBase):
    name = "onnx.generate_weight_only"
    numerics: ClassVar[str] = "int4"
    extends = "onnx.generate"
    description = (
        "The generate loop in ONNX Runtime with the decode step's weights in 4 or 8 bits (MatMulNBits), "
        "activations in float: for LMs whose Linear weights do not fit in cache."
    )
    Config = GenerateWeightOnlyConfig
    # the export, then a pass over every weight in numpy (seconds per hundred MB)
    predicted_setup_calls: ClassVar[float] = 4.0
    predicted_setup_seconds: ClassVar[float] = 6.0

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        reason = super().applicable(pipeline, context)
        if reason is None:
            # said before an export is paid for
            return fits_in_cache(pipeline.model, context.machine)
        return reason

    def transform(
        self, pipeline: Pipeline, fp32_path: Path, out_path: Path, config: GenerateWeightOnlyConfig
    ) -> tuple[Path, dict[str, Any]]:
        return out_path, quantize_weights(fp32_path, out_path, config)

    def safer_variants(self, config: GenerateWeightOnlyConfig, machine: Any) -> list[Any]:
        """8-bit weights, as onnx.weight_only: 4-bit round to nearest erred 0.6% in cosine on a random-init
        MLP, 8-bit 0.01%; a token picked otherwise anywhere fails the exact guard."""
        return [rung for rung in [dataclasses.replace(config, bits=8)] if rung != config]
