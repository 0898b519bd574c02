"""Converting a pipeline's model to OpenVINO and running it behind the model's own call.

The model is converted from PyTorch directly (openvino.convert_model traces it) through a wrapper
that takes the example batch's tensors flat (positional inputs, then keyword ones) and returns the
output's tensors flat (_model_io.flatten_output order); the graph's inputs are then renamed to
accel's graph input names (`input_i`, or the keyword's own name) and its outputs to `output_i`, so
`OvModel` feeds them by name and rebuilds the original structure (a ModelOutput comes back as the
same class). The dimensions that vary between batches (_model_io.varying_dims: the batch axis, and
every axis of integer inputs such as padded token ids) are left dynamic; the others keep the
example's sizes, which lets OpenVINO plan for them.

The saved IR (an .xml graph and its .bin weights) is what the lock lists, with their digests.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch

from accel.core.errors import LockError, MissingDependencyError, require
from accel.core.machine import Machine
from accel.core.pipeline import Pipeline, split_call
from accel.optimizing.lock_files import resolve_lock_file
from accel.optimizing.optimizers._model_io import (
    flatten_output,
    output_structure,
    positional_parameters,
    rebuild_output,
    tensor_count,
    varying_dims,
)
from accel.optimizing.optimizers._onnx_export import check_export, input_names_of, quiet

EXTRA = "openvino"


def resolve_ir(lock_dir: Path, state: dict[str, Any]) -> Path:
    """The .xml of the OpenVINO IR a lock's state names, inside the lock's folder and listed, with its
    .bin beside it (accel.optimizing.lock_files); a pair that is not one IR refuses the lock."""
    xml_path = resolve_lock_file(lock_dir, state.get("xml_file"), "xml_file")
    bin_path = resolve_lock_file(lock_dir, state.get("bin_file"), "bin_file")
    if xml_path.suffix != ".xml" or bin_path != xml_path.with_suffix(".bin"):
        raise LockError(
            f"the lock's xml_file {xml_path.name!r} and bin_file {bin_path.name!r} are not one OpenVINO IR "
            "(NAME.xml and NAME.bin)",
            "run accel optimize again",
        )
    return xml_path


def openvino_unusable(name: str, needs: tuple[str, ...], machine: Machine) -> str | None:
    """Why OpenVINO cannot run optimizer `name` here (a missing package of the extra, a GPU), or None."""
    for module in ("openvino", *needs):
        try:
            require(module, name, EXTRA)
        except MissingDependencyError as exc:
            return f"{module} is not installed: {exc.hint}"
    if machine.is_cuda:
        return "accel runs OpenVINO on its CPU plugin only; the model is on a GPU"
    return None


PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT")
# OpenVINO's names for the precision its CPU plugin computes in. f32 is asked for explicitly: on a
# CPU with AVX-512 BF16 or AMX the plugin's default is bf16, which is a different optimization.
INFERENCE_PRECISIONS = ("f32", "bf16", "f16")


def openvino_module() -> Any:
    """The openvino package; a MissingDependencyError naming the extra when it is not installed."""
    return require("openvino", "the OpenVINO optimizers", EXTRA)


def compile_properties(threads: int, hint: str, precision: str) -> dict[str, Any]:
    """The CPU plugin's settings, as the lock records them."""
    return {
        "INFERENCE_NUM_THREADS": int(threads),
        "PERFORMANCE_HINT": hint,
        "INFERENCE_PRECISION_HINT": precision,
    }


def check_compile_properties(properties: Any) -> dict[str, Any]:
    """The properties a lock records, refused (ValueError) unless they are ones accel writes."""
    if not isinstance(properties, dict) or set(properties) != set(compile_properties(1, "LATENCY", "f32")):
        raise ValueError(f"compile properties {properties!r} are not the ones accel records")
    threads = properties["INFERENCE_NUM_THREADS"]
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"INFERENCE_NUM_THREADS must be a positive integer, got {threads!r}")
    if properties["PERFORMANCE_HINT"] not in PERFORMANCE_HINTS:
        raise ValueError(f"PERFORMANCE_HINT must be one of {', '.join(PERFORMANCE_HINTS)}")
    if properties["INFERENCE_PRECISION_HINT"] not in INFERENCE_PRECISIONS:
        raise ValueError(f"INFERENCE_PRECISION_HINT must be one of {', '.join(INFERENCE_PRECISIONS)}")
    return dict(properties)


def module_scope(name: str) -> str:
    """The prefix OpenVINO's converter gives the operations of the model's submodule `name` (a
    torch module path): it names each after its path under _FlatCall's `model` attribute."""
    return f"__module.model.{name}/"


class _FlatCall(torch.nn.Module):
    """The model called with flat tensors (positional inputs, then keyword ones), returning its
    output's tensors flat: what a tracer can follow whatever the model's signature and output."""

    def __init__(self, model: torch.nn.Module, positional_count: int, keywords: list[str]) -> None:
        super().__init__()
        self.model = model
        self.positional_count = positional_count
        self.keywords = keywords

    def forward(self, *flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        args = flat[: self.positional_count]
        kwargs = dict(zip(self.keywords, flat[self.positional_count :]))
        return tuple(flatten_output(self.model(*args, **kwargs)))


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """The tracer's warnings (shape checks it records as constants), the converters' advice and
    NNCF's progress bars (printed to stdout): accel reports what matters itself."""
    with warnings.catch_warnings(), quiet(), contextlib.redirect_stdout(io.StringIO()):
        with contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield


def convert(pipeline: Pipeline) -> tuple[Any, dict[str, Any]]:
    """The pipeline's model as an openvino.Model with accel's input and output names, and what the
    lock must record to call it as the original (names, structure, dynamic axes)."""
    ov = openvino_module()
    example = pipeline.example_batch()
    args, kwargs = split_call(example)
    flat = [*args, *kwargs.values()]
    input_names = input_names_of(example)
    parameters = positional_parameters(pipeline.model)
    input_for = {
        (parameters[i] if i < len(parameters) else name): name for i, name in enumerate(input_names[: len(args)])
    }
    input_for.update({name: name for name in kwargs})
    dims = varying_dims(pipeline)
    shapes = [
        ov.PartialShape([-1 if d in dims[i] else size for d, size in enumerate(tensor.shape)])
        for i, tensor in enumerate(flat)
    ]
    with torch.inference_mode(False), torch.no_grad():
        sample_output = pipeline.call_model(example)
        structure = output_structure(sample_output)
        wrapper = _FlatCall(pipeline.model, len(args), list(kwargs))
        with silenced():
            model = ov.convert_model(wrapper, example_input=tuple(flat), input=shapes)
    if len(model.inputs) != len(flat):
        raise ValueError(f"the converted graph has {len(model.inputs)} inputs, the model's call {len(flat)}")
    if len(model.outputs) != tensor_count(structure):
        raise ValueError(
            f"the converted graph has {len(model.outputs)} outputs, the model's output {tensor_count(structure)} tensors"
        )
    for port, name in zip(model.inputs, input_names):
        port.get_tensor().set_names({name})
    output_names = [f"output_{i}" for i in range(len(model.outputs))]
    for port, name in zip(model.outputs, output_names):
        port.get_tensor().set_names({name})
    return model, {
        "input_names": input_names,
        "output_names": output_names,
        "output_structure": structure,
        "positional_parameters": parameters,
        "input_for": input_for,
        "dynamic_axes": {name: sorted(dims[i]) for i, name in enumerate(input_names) if dims[i]},
    }


def save_ir(model: Any, xml_path: Path) -> Path:
    """Write the IR (xml_path and its .bin beside it) with the weights as they are: OpenVINO's
    save_model would otherwise compress float32 weights to float16."""
    ov = openvino_module()
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path.with_suffix(".bin")


def check_conversion(pipeline: Pipeline, model: Any, call: dict[str, Any], xml_path: Path, threads: int) -> None:
    """The float32 conversion, compiled from a scratch IR at `xml_path`, checked on the pipeline's
    batches of other shapes than the example (_onnx_export.check_export): NotApplicable when the
    trace fixed the model's data-dependent control flow at the example's shape."""

    def build() -> OvModel:
        save_ir(model, xml_path)
        return OvModel(xml_path, call, compile_properties(threads, "LATENCY", "f32"))

    try:
        check_export(pipeline, build)
    finally:
        xml_path.unlink(missing_ok=True)
        xml_path.with_suffix(".bin").unlink(missing_ok=True)


def calibration_feeds(pipeline: Pipeline, input_names: list[str], batches: int) -> list[dict[str, Any]]:
    """The pipeline's own first batches (its example batch without a source), as graph feeds."""
    source = (
        pipeline.iter_batches(limit_batches=batches, num_workers=0)
        if pipeline.has_source
        else [pipeline.example_batch()]
    )
    feeds = []
    for batch in source:
        args, kwargs = split_call(batch)
        values = [*args, *kwargs.values()]
        feeds.append({n: v.detach().cpu().contiguous().numpy() for n, v in zip(input_names, values)})
    return feeds


class OvModel(torch.nn.Module):
    """An OpenVINO compiled model behind the model's call signature: torch tensors in, the original
    output structure out. Inputs are taken positionally or by keyword, as the original took them
    (`positional` names its positional parameters in order, `input_for` maps a parameter to its
    graph input)."""

    def __init__(
        self,
        xml_path: Path,
        call: dict[str, Any],
        properties: Any,
    ) -> None:
        super().__init__()
        ov = openvino_module()
        self.xml_path = Path(xml_path)
        self.properties = check_compile_properties(properties)
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(xml_path)), "CPU", self.properties)
        self.input_names = list(call["input_names"])
        self.structure = call["output_structure"]
        self.positional = list(call.get("positional_parameters") or [])
        self.input_for = dict(call.get("input_for") or {})
        # Compiling may give a port more names (a tensor it merged with); accel's is among them.
        self._graph_types = {
            name: port.get_element_type().to_dtype()
            for port in self.compiled.inputs
            for name in port.get_names()
            if name in self.input_names
        }
        self._output_count = len(self.compiled.outputs)
        if tensor_count(self.structure) != self._output_count:
            raise ValueError(
                f"the OpenVINO graph has {self._output_count} outputs, the model's output "
                f"{tensor_count(self.structure)} tensors"
            )
        self._request = self.compiled.create_infer_request()

    def _feeds(self, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        named = [(self.positional[i] if i < len(self.positional) else f"input_{i}", v) for i, v in enumerate(args)]
        feeds = {}
        for parameter, value in [*named, *kwargs.items()]:
            if value is None:
                continue  # left at its default, as the conversion did
            name = self.input_for.get(parameter, parameter)
            if name not in self._graph_types:
                raise TypeError(
                    f"the converted model has no input {parameter!r} (it was converted with "
                    f"{', '.join(self.input_names)}); optimize again with it in the example batch"
                )
            array = value.detach().cpu().contiguous().numpy()
            wanted = self._graph_types[name]
            feeds[name] = array if array.dtype == wanted else array.astype(wanted)
        return feeds

    @property
    def threads(self) -> int:
        """The compiled model's inference thread count."""
        return int(self.properties["INFERENCE_NUM_THREADS"])

    def rethreaded(self, threads: int) -> OvModel:
        """The same IR compiled again at `threads` inference threads (runtime.threads)."""
        call = {
            "input_names": self.input_names,
            "output_structure": self.structure,
            "positional_parameters": self.positional,
            "input_for": self.input_for,
        }
        return OvModel(self.xml_path, call, {**self.properties, "INFERENCE_NUM_THREADS": threads})

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        # The call is synchronous, so the request reads the feeds' memory in place (share_inputs: no
        # copy of each input, a generate step's KV cache included); the outputs are copied out, since
        # the request reuses their memory on its next call.
        results = self._request.infer(self._feeds(args, kwargs), share_inputs=True)
        return rebuild_output(self.structure, [torch.from_numpy(results[i]) for i in range(self._output_count)])

    def runtime_op_types(self) -> set[str]:
        """The layer types of the compiled (runtime) graph: how int8 shows (FakeQuantize folded into
        int8 convolutions and matmuls, their precision u8/i8)."""
        found = set()
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            found.add(str(info["layerType"].astype(str)) if "layerType" in info else op.get_type_name())
        return found

    def runtime_precisions(self) -> set[str]:
        """The precisions the compiled graph's layers run in (u8/i8 where int8 kernels run)."""
        found = set()
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if "runtimePrecision" in info:
                found.add(str(info["runtimePrecision"].astype(str)))
        return found

    def extra_repr(self) -> str:
        return (
            f"{self.xml_path.name}, threads={self.properties['INFERENCE_NUM_THREADS']}, "
            f"precision={self.properties['INFERENCE_PRECISION_HINT']}"
        )
