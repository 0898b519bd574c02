"""Exporting a pipeline's model to ONNX with the call it really makes.

Keyword inputs stay keywords and optional arguments keep their defaults (transformers models fail
when their inputs are fed positionally: `forward() got multiple values for argument 'use_cache'`);
the batch axis, and every axis of integer inputs (padded token ids and masks), are exported
dynamic, so the drop-in takes other batch sizes and sequence lengths. `auto` picks the exporter:
torch.export (dynamo) for keyword calls and structured outputs, the faster TorchScript tracer for
positional calls returning tensors, falling back to dynamo when the tracer cannot follow the model.
The tracer, when asked for on a keyword call or a structured output (ORT's transformer fusions match
its graphs only), traces the model through `_FlatCall`: every input positional, the output a tuple.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from accel.core.pipeline import Pipeline, split_call
from accel.optimizing.optimizers import NotApplicable, _export_cache
from accel.optimizing.optimizers._model_io import flatten_output, output_structure, positional_parameters, varying_dims

EXPORTERS = ("auto", "torchscript", "dynamo")
# The dynamo exporter implements opset 18 and up; a lower opset would be converted down after export.
DYNAMO_MIN_OPSET = 18
# Batches of shapes other than the example's that an export is checked on, and how many batches of
# the source are read to find them: enough to meet another length in a source of mixed lengths.
CHECK_BATCHES = 2
SHAPE_SEARCH_BATCHES = 16
# A float32 export agrees with the model to rounding (1e-5 of the outputs' scale); an export that
# froze the model's loop at another length does not come within 1% of it.
EXPORT_TOLERANCE = 1e-2


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """ORT's quantizer and torch's exporter log advice; accel reports what matters itself."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def input_names_of(batch: Any) -> list[str]:
    """Graph input names: `input_i` for positional inputs, the keyword's own name for keyword ones."""
    args, kwargs = split_call(batch)
    return [f"input_{i}" for i in range(len(args))] + list(kwargs)


def choose_exporter(requested: str, kwargs: dict[str, Any], sample_output: Any) -> str:
    """`auto`: the dynamo exporter for keyword calls and structured outputs (a ModelOutput, a dict),
    which it exports with the real call signature; the faster TorchScript exporter otherwise."""
    if requested != "auto":
        return requested
    return "torchscript" if _plain_output(sample_output) and not kwargs else "dynamo"


def _plain_output(sample_output: Any) -> bool:
    """A tensor or a plain tuple of tensors: what the TorchScript tracer returns as it is."""
    return isinstance(sample_output, torch.Tensor) or (
        isinstance(sample_output, tuple)
        and not hasattr(sample_output, "_fields")
        and all(isinstance(t, torch.Tensor) for t in sample_output)
    )


class _FlatCall(torch.nn.Module):
    """The model called with its keyword inputs as keywords and its output flattened to a tuple:
    the TorchScript tracer feeds every input positionally and follows tensors and tuples only."""

    def __init__(self, model: torch.nn.Module, keywords: list[str]) -> None:
        super().__init__()
        self.model = model
        self.keywords = keywords
        # The exporter puts the traced module back in its own mode afterwards, through the model too.
        self.training = model.training

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        positional = len(inputs) - len(self.keywords)
        output = self.model(*inputs[:positional], **dict(zip(self.keywords, inputs[positional:])))
        return tuple(flatten_output(output))


def _dynamo_shapes(parameters: list[str], args: tuple, kwargs: dict, dims: list[set[int]]) -> Any:
    """torch.export's dynamic_shapes: keyed by the forward's parameter names when they are known."""
    specs = [{d: torch.export.Dim.AUTO for d in sorted(found)} or None for found in dims]
    if not any(specs):
        return None
    if len(parameters) >= len(args):
        return dict(zip([*parameters[: len(args)], *kwargs], specs))
    return tuple(specs) if not kwargs else None


def _tracer_axes(
    input_names: list[str], dims: list[set[int]], output_names: list[str], outputs: list[torch.Tensor], flat: bool
) -> dict[str, dict[int, str]]:
    """The TorchScript exporter's dynamic_axes: each input's varying dimensions; each output's batch
    axis, or (traced through _FlatCall) every output axis, which may follow the inputs' (a padded length)."""
    axes = {name: {d: f"{name}_dim{d}" for d in sorted(dims[i])} for i, name in enumerate(input_names) if dims[i]}
    for name, out in zip(output_names, outputs):
        if out.dim() > 0:
            axes[name] = {d: f"{name}_dim{d}" for d in ([0] if flat else range(out.dim()))}
    return axes


def _exported_dynamic_axes(path: Path) -> dict[str, list[int]]:
    """Per graph input, the dimensions the exported graph left symbolic (what other shapes may vary)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    axes = {}
    for value in graph.input:
        dims = [i for i, d in enumerate(value.type.tensor_type.shape.dim) if d.dim_param or not d.HasField("dim_value")]
        if dims:
            axes[value.name] = dims
    return axes


def export_onnx(pipeline: Pipeline, path: Path, *, opset: int, requested: str) -> dict[str, Any]:
    """Export the pipeline's model at its example batch, with the call it really makes (keyword
    inputs stay keywords, optional arguments keep their defaults) and its batch and padded axes
    dynamic; returns what the lock must record."""
    example = pipeline.example_batch()
    dims = varying_dims(pipeline)
    settings = repr((opset, requested, input_names_of(example), _input_shapes(example), dims))
    io = _export_cache.reuse(pipeline.model, settings, path)
    if io is not None:
        return io
    path.parent.mkdir(parents=True, exist_ok=True)
    files_before = {p.name for p in path.parent.iterdir()}
    io = _export(pipeline, path, example, dims, opset=opset, requested=requested)
    _export_cache.remember(pipeline.model, settings, path, io, files_before)
    return io


def _export(pipeline: Pipeline, path: Path, example: Any, dims: Any, *, opset: int, requested: str) -> dict[str, Any]:
    args, kwargs = split_call(example)
    input_names = input_names_of(example)
    parameters = positional_parameters(pipeline.model)
    input_for = {
        (parameters[i] if i < len(parameters) else name): name for i, name in enumerate(input_names[: len(args)])
    }
    input_for.update({name: name for name in kwargs})
    with torch.inference_mode(False), torch.no_grad():
        sample_output = pipeline.call_model(example)
    structure = output_structure(sample_output)
    output_names = [f"output_{i}" for i in range(len(flatten_output(sample_output)))]
    exporter = choose_exporter(requested, kwargs, sample_output)
    dynamo_opset = max(opset, DYNAMO_MIN_OPSET)
    # What both exporters are given alike; each call adds its own exporter, opset and dynamic axes.
    export = functools.partial(
        torch.onnx.export,
        pipeline.model,
        args,
        str(path),
        kwargs=kwargs or None,
        input_names=input_names,
        output_names=output_names,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), quiet(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            flat = not kwargs and _plain_output(sample_output)
            dynamic_axes = _tracer_axes(input_names, dims, output_names, flatten_output(sample_output), flat)
            traced = export
            if not flat:
                traced = functools.partial(
                    torch.onnx.export,
                    _FlatCall(pipeline.model, list(kwargs)),
                    (*args, *kwargs.values()),
                    str(path),
                    input_names=input_names,
                    output_names=output_names,
                )
            try:
                traced(dynamo=False, opset_version=opset, dynamic_axes=dynamic_axes or None)
            except Exception:
                if requested != "auto":
                    raise
                exporter = "dynamo"  # the tracer could not follow the model; torch.export may
        if exporter == "dynamo":
            export(
                dynamo=True,
                opset_version=dynamo_opset,
                dynamic_shapes=_dynamo_shapes(parameters, args, kwargs, dims),
                verbose=False,
            )
    return {
        "input_names": input_names,
        "output_names": output_names,
        "output_structure": structure,
        "positional_parameters": parameters,
        "input_for": input_for,
        "dynamic_axes": _exported_dynamic_axes(path),
        "exporter": exporter,
        "opset": opset if exporter == "torchscript" else dynamo_opset,
    }


def other_shaped_batches(pipeline: Pipeline, limit: int = CHECK_BATCHES) -> list[Any]:
    """Up to `limit` of the pipeline's batches whose inputs differ in shape from the example's (and
    from each other): what an export traced at the example must also hold for."""
    if not pipeline.has_source:
        return []
    seen = {_input_shapes(pipeline.example_batch())}
    found = []
    for batch in pipeline.iter_batches(limit_batches=SHAPE_SEARCH_BATCHES, num_workers=0):
        shapes = _input_shapes(batch)
        if shapes not in seen:
            seen.add(shapes)
            found.append(batch)
            if len(found) == limit:
                break
    return found


def _input_shapes(batch: Any) -> tuple:
    args, kwargs = split_call(batch)
    return tuple(tuple(t.shape) if isinstance(t, torch.Tensor) else None for t in [*args, *kwargs.values()])


def fixed_shape_text(example: Any, batch: Any) -> str:
    """'length 7' or 'batch size 4': where the example's input shape differs from the batch's (the
    first differing axis past the batch axis, else the batch axis), as the example has it."""
    axes = [
        (axis, before)
        for before_shape, after_shape in zip(_input_shapes(example), _input_shapes(batch))
        if before_shape is not None and after_shape is not None and len(before_shape) == len(after_shape)
        for axis, (before, after) in enumerate(zip(before_shape, after_shape))
        if before != after
    ]
    axis, size = min(axes, key=lambda item: (item[0] == 0, item[0]), default=(1, 0))
    return f"batch size {size}" if axis == 0 else f"length {size}"


def output_mismatch(expected: Any, got: Any, tolerance: float = EXPORT_TOLERANCE) -> str | None:
    """How an exported model's output differs from the model's own, or None when it agrees (same
    tensors, same shapes, within `tolerance` of the outputs' scale)."""
    want, have = flatten_output(expected), flatten_output(got)
    if len(want) != len(have):
        return f"it returned {len(have)} tensors, the model {len(want)}"
    for i, (a, b) in enumerate(zip(want, have)):
        if tuple(a.shape) != tuple(b.shape):
            return f"its output {i} has shape {tuple(b.shape)}, the model's {tuple(a.shape)}"
        if a.is_floating_point() and a.numel():
            a, b = a.detach().double(), b.detach().double()
            scale = float(a.abs().max()) or 1.0
            error = float((a - b).abs().max()) / scale
            if error > tolerance:
                return f"its output {i} differs from the model's by {error:.0%} of the output's scale"
        elif not torch.equal(a, b):
            return f"its output {i} differs from the model's"
    return None


def check_other_shapes(pipeline: Pipeline, exported: Callable[[Any], Any], batches: list[Any]) -> None:
    """Raise NotApplicable when the exported model, called as the pipeline calls its model
    (`exported(batch)`), fails or disagrees with the model on a batch of another shape than the
    example it was traced at: the trace followed the model's data-dependent control flow (a Python
    loop over the characters of a sequence) once, at the example's shape."""
    example = pipeline.example_batch()
    for batch in batches:
        with torch.inference_mode(False), torch.no_grad():
            expected = pipeline.call_model(batch)
            try:
                problem = output_mismatch(expected, exported(batch))
            except Exception as exc:  # noqa: BLE001 - the runtime's error, whatever its type, is the evidence
                problem = f"the runtime raised {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:120]}"
        if problem is not None:
            shape = "x".join(str(s) for s in next(s for s in _input_shapes(batch) if s is not None))
            raise NotApplicable(
                f"the export fixes a data-dependent loop at {fixed_shape_text(example, batch)}: on a batch of "
                f"shape {shape} {problem}",
                "the model's graph follows its inputs' shapes (a Python loop over them); run it in PyTorch",
            )


def check_export(pipeline: Pipeline, build: Callable[[], Any]) -> None:
    """Raise NotApplicable when the exported model (`build()` makes a runtime model with the
    original's call signature) fails or disagrees with the model on the pipeline's batches of other
    shapes; nothing is built when every batch has the example's shape."""
    batches = other_shaped_batches(pipeline)
    if batches:
        check_other_shapes(pipeline, pipeline.replace(model=build()).call_model, batches)
