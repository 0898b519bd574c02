"""`accel profile model.onnx`: an ONNX model under ONNX Runtime, measured and analyzed like a pipeline.

Inputs are synthesized from the model's signature (dynamic dimensions from `--dynamic-dim
NAME=VALUE`, 1 where not given). Two passes, as for PyTorch: a light timing pass on a plain
session, and a profiling pass on a session with ORT's profiler on, whose per-node kernel times
(with each node's input and output shapes) give FLOPs and bytes per node: MatMul, Gemm and Conv
from their shapes, one FLOP per output element for the rest. Inputs that are initializers are
weight bytes. The nodes become a CostModel, so the overhead, memory_bandwidth and compute_bound
analyzers read an ONNX model exactly as they read a PyTorch one. Ctrl-C or SIGTERM during the
profiling pass keeps the timing (PassesInterrupted; the report is marked partial).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from accel.core.counts import Counts, OpCount
from accel.core.dtypes import element_bytes, onnx_numpy_dtype, onnx_torch_name
from accel.core.errors import AccelError, PipelineLoadError, require
from accel.core.machine import Machine
from accel.core.measure import time_calls
from accel.profiling.costmodel import CostModel, build_cost_model
from accel.profiling.data import EndToEnd, ProfileData, StageTiming
from accel.profiling.partial import PassesInterrupted

PROFILED_RUNS = 5
TIMING_BUDGET_SECONDS = 5.0
DEFAULT_DYNAMIC_DIM = 1
# The pass named in a partial report when Ctrl-C or SIGTERM stops the node profiling.
NODES_PASS = "nodes"


def parse_dynamic_dims(values: list[str]) -> dict[str, int]:
    """`["batch=8", "seq=128"]` -> {"batch": 8, "seq": 128}; a malformed entry is an AccelError."""
    dims: dict[str, int] = {}
    for value in values:
        name, sep, number = value.partition("=")
        if not sep or not name.strip() or not number.strip().isdigit() or int(number) < 1:
            raise AccelError(
                f"--dynamic-dim {value!r} is not NAME=VALUE with a positive integer VALUE",
                "write e.g. --dynamic-dim batch=8",
            )
        dims[name.strip()] = int(number)
    return dims


def synthesize_inputs(session: Any, dynamic_dims: dict[str, int]) -> tuple[dict[str, np.ndarray], dict[str, list[int]]]:
    """One array per model input: shape from the signature, ones (ids 0/1 for integer inputs)."""
    rng = np.random.default_rng(0)
    feeds: dict[str, np.ndarray] = {}
    shapes: dict[str, list[int]] = {}
    known = set()
    for arg in session.get_inputs():
        dtype = onnx_numpy_dtype(arg.type)
        if dtype is None:
            raise AccelError(
                f"ONNX input {arg.name!r} has type {arg.type}, which accel cannot synthesize",
                "profile a model whose inputs are numeric tensors",
            )
        shape = []
        for dim in arg.shape:
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            else:
                shape.append(
                    dynamic_dims.get(str(dim), DEFAULT_DYNAMIC_DIM) if dim is not None else DEFAULT_DYNAMIC_DIM
                )
                known.add(str(dim))
        shapes[arg.name] = shape
        if np.issubdtype(dtype, np.floating):
            feeds[arg.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[arg.name] = rng.integers(0, 2, size=shape).astype(dtype)
    unknown = set(dynamic_dims) - known
    if unknown:
        raise AccelError(
            f"--dynamic-dim names {sorted(unknown)} that no input of the model has",
            f"dynamic dimensions of this model: {', '.join(sorted(known)) or 'none'}",
        )
    return feeds, shapes


def _shape_elements(entries: list[dict[str, list[int]]]) -> list[tuple[str, list[int]]]:
    return [(kind, shape) for entry in entries for kind, shape in entry.items()]


def node_flops(
    op_type: str,
    inputs: list[tuple[str, list[int]]],
    outputs: list[tuple[str, list[int]]],
    weight_shape: list[int] | None = None,
) -> int:
    out = math.prod(outputs[0][1]) if outputs else 0
    if (
        op_type in ("MatMul", "Gemm", "MatMulInteger", "FusedMatMul", "QLinearMatMul", "DynamicQuantizeMatMul")
        and inputs
    ):
        a = inputs[0][1]
        k = a[-1] if a else 1
        if op_type == "Gemm" and len(a) == 2 and outputs and outputs[0][1] and outputs[0][1][0] != a[0]:
            k = a[0]  # transA: A is K x M
        return 2 * out * k
    if op_type in ("Conv", "FusedConv", "QLinearConv", "ConvInteger"):
        weight = weight_shape or (inputs[1][1] if len(inputs) > 1 else None)
        if weight:
            return 2 * out * math.prod(weight[1:])
    return out


def _bytes(entries: list[tuple[str, list[int]]]) -> int:
    return sum(math.prod(shape) * (element_bytes(kind) or 4) for kind, shape in entries)


@dataclasses.dataclass(frozen=True)
class NodeWeights:
    """A node's initializer inputs, from the graph: ORT's profiler omits weights it pre-packed."""

    positions: frozenset[int]
    input_count: int
    weight_bytes: int
    first_weight_shape: list[int] | None = None


def node_counts(events: list[dict[str, Any]], weights: dict[str, NodeWeights]) -> list[tuple[OpCount, float]]:
    """Per kernel event: its counts and seconds (one run's events, in order)."""
    result = []
    for event in events:
        args = event.get("args", {})
        node = event["name"].removesuffix("_kernel_time")
        inputs = _shape_elements(args.get("input_type_shape", []))
        outputs = _shape_elements(args.get("output_type_shape", []))
        op_type = args.get("op_name", "?")
        known = weights.get(node, NodeWeights(frozenset(), len(inputs), 0))
        # With every input listed, the weights are among them; with fewer, pre-packed weights are missing.
        listed_weights = (
            sum(_bytes([inputs[i]]) for i in known.positions if i < len(inputs))
            if len(inputs) == known.input_count
            else 0
        )
        read = _bytes(inputs) - listed_weights + known.weight_bytes
        dtype = (onnx_torch_name(inputs[0][0]) or "") if inputs else ""
        count = OpCount(
            op=f"onnx::{op_type}",
            module=node,
            flops=node_flops(op_type, inputs, outputs, known.first_weight_shape),
            bytes_read=read,
            bytes_written=_bytes(outputs),
            weight_bytes=known.weight_bytes,
            dtype=dtype,
        )
        result.append((count, event.get("dur", 0) / 1e6))
    return result


def _node_weights(path: Path) -> dict[str, NodeWeights]:
    """Per node name, its initializer inputs (weights) and their bytes."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    initializers = {init.name: init for init in model.graph.initializer}
    result = {}
    for node in model.graph.node:
        positions = [i for i, name in enumerate(node.input) if name in initializers]
        total = 0
        first = None
        for i in positions:
            init = initializers[node.input[i]]
            size = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
            total += math.prod(init.dims) * size
            if first is None and i == 1:
                first = list(init.dims)
        result[node.name] = NodeWeights(frozenset(positions), len([n for n in node.input if n]), total, first)
    return result


def _profiled_runs(ort: Any, path: Path, feeds: dict[str, np.ndarray], runs: int) -> list[list[dict[str, Any]]]:
    with tempfile.TemporaryDirectory(prefix="accel-ort-") as tmp:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), options, providers=ort.get_available_providers())
        session.run(None, feeds)  # warm-up
        for _ in range(runs):
            session.run(None, feeds)
        trace = json.loads(Path(session.end_profiling()).read_text())
    per_run: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    for event in trace:
        if event.get("cat") == "Session" and event.get("name") == "model_run":
            per_run.append(current)
            current = []
        elif event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            current.append(event)
    # Node events are logged before the model_run event that closes their run; the first is the warm-up.
    return per_run[1:] if len(per_run) > 1 else per_run


def profile_onnx(
    path: str | os.PathLike,
    machine: Machine,
    *,
    dynamic_dims: dict[str, int] | None = None,
    progress: Callable[[str], None] = lambda message: None,
    budget_seconds: float = TIMING_BUDGET_SECONDS,
) -> ProfileData:
    """Measure an ONNX model under ONNX Runtime: latency, and the per-node cost model."""
    ort = require("onnxruntime", "profiling an ONNX model")
    path = Path(path)
    try:
        session = ort.InferenceSession(str(path), providers=ort.get_available_providers())
    except Exception as exc:
        raise PipelineLoadError(
            f"ONNX Runtime cannot load {path}: {str(exc).splitlines()[0]}",
            "check the file is a valid ONNX model (python -c 'import onnx; onnx.checker.check_model(\"...\")')",
        ) from exc
    feeds, shapes = synthesize_inputs(session, dynamic_dims or {})
    progress("timing ONNX Runtime runs")
    latency = time_calls(lambda: session.run(None, feeds), budget_seconds=min(budget_seconds, TIMING_BUDGET_SECONDS))
    batch = max((s[0] for s in shapes.values() if s), default=1)
    data = ProfileData(target=str(path), mode="onnx", batch_size=batch, cores=machine.cores)
    data.model_latency = latency
    data.stages = [StageTiming("model", latency.median * batch, batch)]
    data.end_to_end = EndToEnd(
        seconds=latency.median,
        samples=batch,
        batches=1,
        wait_seconds=0.0,
        compute_seconds=latency.median,
        num_workers=0,
        batch_seconds=latency.samples,
    )
    data.extra["onnx"] = {"inputs": shapes, "providers": session.get_providers()}
    progress("profiling ONNX Runtime nodes")
    try:
        ops, nodes = _node_cost_model(ort, path, feeds, machine, latency.median)
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM: hand back the timing measured
        raise PassesInterrupted(data, NODES_PASS) from stop
    data.ops = ops
    data.extra["onnx"]["nodes_profiled"] = nodes
    return data


def _node_cost_model(
    ort: Any, path: Path, feeds: dict[str, np.ndarray], machine: Machine, call_seconds: float
) -> tuple[CostModel, int]:
    """The per-node cost model from ORT's profiler over PROFILED_RUNS runs (each node's median), and
    how many nodes one run has."""
    runs = _profiled_runs(ort, path, feeds, PROFILED_RUNS)
    weights = _node_weights(path)
    per_node: dict[tuple[str, int], list[float]] = defaultdict(list)
    template: list[OpCount] = []
    for index, events in enumerate(runs):
        seen: dict[str, int] = defaultdict(int)
        for count, seconds in node_counts(events, weights):
            per_node[(count.module, seen[count.module])].append(seconds)
            seen[count.module] += 1
            if index == 0:
                template.append(count)
    seen_nodes: dict[str, int] = defaultdict(int)
    op_seconds = []
    for count in template:
        op_seconds.append(statistics.median(per_node[(count.module, seen_nodes[count.module])]))
        seen_nodes[count.module] += 1
    return build_cost_model(Counts(ops=tuple(template)), op_seconds, machine, call_seconds), len(template)
