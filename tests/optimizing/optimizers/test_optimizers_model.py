"""Model-level optimizers on small real models: each returns a new pipeline whose model is a
drop-in callable (torch tensors in and out) with outputs that agree with the baseline."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

import accel
from accel.core.machine import describe_machine
from accel.optimizing.optimizers import OPTIMIZERS, Context, make_config
from accel.optimizing.optimizers.onnx_runtime import OrtModel
from accel.optimizing.optimizers.precision import MIN_FAST_RATIO, probe_ratio
from accel.optimizing.search.fidelity import compare_outputs
from tests.paths import PLANTED


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(16, 32)
        self.b = nn.Linear(8, 32)

    def forward(self, x, y):
        return torch.relu(self.a(x) + self.b(y)), self.a(x).sum(-1)


def _context(tmp_path):
    return Context(machine=describe_machine(), workdir=tmp_path)


def _mlp_pipeline(with_source: bool = False) -> accel.Pipeline:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
    if with_source:
        return accel.Pipeline(model=model, source=[torch.randn(64) for _ in range(20)], batch_size=8)
    return accel.Pipeline(model=model, inputs=(torch.randn(4, 64),))


@pytest.mark.parametrize(
    "name, min_cosine",
    [
        ("onnx.runtime", 0.99999),
        ("onnx.int8_dynamic", 0.99),
        ("onnx.int8_static", 0.98),
        ("quantize.int8_dynamic", 0.99),
    ],
)
def test_model_optimizers_agree_with_the_baseline(tmp_path, name, min_cosine):
    pipeline = _mlp_pipeline()
    optimizer = OPTIMIZERS.get(name)
    assert optimizer.applicable(pipeline, _context(tmp_path)) is None
    applied = optimizer.apply(pipeline, make_config(optimizer, {}), _context(tmp_path))
    assert applied.pipeline is not pipeline and applied.pipeline.model is not pipeline.model
    with torch.inference_mode():
        expected = pipeline.forward(pipeline.inputs)
        got = applied.pipeline.forward(pipeline.inputs)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and got.shape == expected.shape
    assert compare_outputs(expected, got).cosine >= min_cosine
    assert json.loads(json.dumps(applied.state)) == applied.state  # the lock can record it
    assert applied.setup_seconds >= 0


def test_ort_model_keeps_the_call_signature_and_varying_batches(tmp_path):
    torch.manual_seed(0)
    samples = [(torch.randn(16), torch.randn(8)) for _ in range(10)]
    pipeline = accel.Pipeline(
        model=TwoInputs().eval(),
        source=samples,
        batch_size=4,
        collate=lambda batch: tuple(torch.stack(parts) for parts in zip(*batch)),
    )
    applied = OPTIMIZERS.get("onnx.runtime").apply(
        pipeline, make_config(OPTIMIZERS.get("onnx.runtime"), {}), _context(tmp_path)
    )
    assert isinstance(applied.pipeline.model, OrtModel)
    assert applied.state["session_options"]["intra_op_num_threads"] == torch.get_num_threads()
    assert applied.state["dynamic_axes"]["input_0"] == [0]
    expected, got = pipeline.run(), applied.pipeline.run()  # batches of 4, 4 and 2
    assert len(got) == 10 and isinstance(got[9], tuple)
    assert compare_outputs(expected, got).max_abs_error < 1e-4


def test_static_int8_is_calibrated_on_the_source(tmp_path):
    pipeline = _mlp_pipeline(with_source=True)
    optimizer = OPTIMIZERS.get("onnx.int8_static")
    applied = optimizer.apply(pipeline, make_config(optimizer, {"calibration_batches": 2}), _context(tmp_path))
    assert applied.state["calibrated_on"] == "source" and applied.state["calibration_batches"] == 2
    # 0.98 and more where the CPU has VNNI; 0.967 on an AVX2-only EPYC (ORT's U8S8 kernels saturate there)
    assert compare_outputs(pipeline.run(), applied.pipeline.run()).cosine > 0.95


def test_not_applicable_says_why(tmp_path):
    pipeline = accel.Pipeline(model=lambda x: x * 2, inputs=(torch.ones(2),))
    for name in ("onnx.runtime", "quantize.int8_dynamic", "precision.bf16", "compile"):
        reason = OPTIMIZERS.get(name).applicable(pipeline, _context(tmp_path))
        assert reason and "nn.Module" in reason
    conv_only = accel.Pipeline(model=nn.Conv2d(3, 4, 3).eval(), inputs=(torch.randn(1, 3, 8, 8),))
    assert "no nn.Linear" in OPTIMIZERS.get("quantize.int8_dynamic").applicable(conv_only, _context(tmp_path))


def test_half_precision_applies_only_where_it_is_fast(tmp_path):
    pipeline = _mlp_pipeline()
    for name in ("precision.bf16", "precision.fp16"):
        optimizer = OPTIMIZERS.get(name)
        reason = optimizer.applicable(pipeline, _context(tmp_path))
        ratio, how = optimizer.fast_ratio(_context(tmp_path))  # calibration when cached, else the probe
        assert (reason is None) == (ratio >= MIN_FAST_RATIO), (reason, ratio, how)
        assert probe_ratio(optimizer.dtype_name) > 0
    optimizer = OPTIMIZERS.get("precision.bf16")
    applied = optimizer.apply(pipeline, make_config(optimizer, {}), _context(tmp_path))
    got = applied.pipeline.forward(pipeline.inputs)
    assert got.dtype == torch.float32
    assert compare_outputs(pipeline.forward(pipeline.inputs), got).cosine > 0.99


def test_calibrated_machine_decides_half_precision(tmp_path):
    machine = dataclasses.replace(describe_machine(), peak_gflops_by_dtype={"float32": 100.0, "bfloat16": 50.0})
    reason = OPTIMIZERS.get("precision.bf16").applicable(_mlp_pipeline(), Context(machine=machine, workdir=tmp_path))
    assert reason and "0.50x" in reason and "calibration" in reason


@pytest.mark.slow
def test_compile_reports_its_one_time_cost(tmp_path):
    pipeline = _mlp_pipeline()
    optimizer = OPTIMIZERS.get("compile")
    if optimizer.applicable(pipeline, _context(tmp_path)):
        pytest.skip("no compiler here")
    applied = optimizer.apply(pipeline, make_config(optimizer, {}), _context(tmp_path))
    assert applied.setup_seconds > 0 and applied.notes["compile_seconds"] >= 0
    with torch.inference_mode():
        assert (
            compare_outputs(pipeline.forward(pipeline.inputs), applied.pipeline.forward(pipeline.inputs)).cosine
            > 0.9999
        )


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_config_round_trips_through_json(name):
    optimizer = OPTIMIZERS.get(name)
    config = make_config(optimizer, {})
    data = json.loads(json.dumps(dataclasses.asdict(config)))
    assert make_config(optimizer, data) == config
    assert optimizer.description and optimizer.name == name


# --- each model optimizer is proven to change the model (a no-op would pass the tests above) ------
def _ops_run(model, inputs) -> set[str]:
    """The torch operators a forward call runs (what torch.profiler sees)."""
    with torch.inference_mode(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model(*inputs)
    return {event.key for event in prof.key_averages()}


FP32_MATMULS = {"aten::addmm", "aten::mm", "aten::linear", "aten::matmul"}


@pytest.mark.parametrize(
    "name, quantized_ops",
    [
        ("onnx.runtime", set()),
        ("onnx.int8_dynamic", {"MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"}),
        ("onnx.int8_static", {"QuantizeLinear", "DequantizeLinear", "QLinearMatMul"}),
    ],
)
def test_the_ort_session_is_what_runs_and_int8_weights_are_in_the_graph(tmp_path, name, quantized_ops):
    import onnx

    pipeline = _mlp_pipeline(with_source=name == "onnx.int8_static")
    optimizer = OPTIMIZERS.get(name)
    model = optimizer.apply(pipeline, make_config(optimizer, {}), _context(tmp_path)).pipeline.model
    assert isinstance(model, OrtModel)
    batch = pipeline.example_batch()
    inputs = batch if isinstance(batch, tuple) else (batch,)
    assert FP32_MATMULS & _ops_run(pipeline.model, inputs)  # the baseline multiplies in torch...
    assert not FP32_MATMULS & _ops_run(model, inputs)  # ...the optimized model does not: ORT does
    graph = onnx.load(str(model.onnx_path)).graph
    node_types = {node.op_type for node in graph.node}
    int8 = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    int8_weights = [i.name for i in graph.initializer if i.data_type in int8]
    if quantized_ops:
        assert node_types & quantized_ops, node_types
        assert int8_weights, "no int8 initializer in the quantized graph"
    else:
        assert not int8_weights and "MatMul" in node_types or "Gemm" in node_types


def test_torch_int8_dynamic_replaces_the_float_matmuls(tmp_path):
    pipeline = _mlp_pipeline()
    optimizer = OPTIMIZERS.get("quantize.int8_dynamic")
    model = optimizer.apply(pipeline, make_config(optimizer, {}), _context(tmp_path)).pipeline.model
    ops = _ops_run(model, pipeline.inputs)
    assert not {"aten::addmm", "aten::mm"} & ops, ops  # no float32 matmul left
    assert any("quantized" in op or "int_mm" in op or "int8" in op for op in ops), ops
    assert all(p.dtype == torch.float32 for p in pipeline.model.parameters())  # the input was not mutated


def test_bf16_runs_the_layers_in_bf16(tmp_path):
    pipeline = _mlp_pipeline()
    optimizer = OPTIMIZERS.get("precision.bf16")
    model = optimizer.apply(pipeline, make_config(optimizer, {}), _context(tmp_path)).pipeline.model
    dtypes = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
        for m in model.modules()
        if isinstance(m, nn.Linear)
    ]
    try:
        with torch.inference_mode():
            out = model(*pipeline.inputs)
    finally:
        for hook in hooks:
            hook.remove()
    assert dtypes and all(d == torch.bfloat16 for d in dtypes), dtypes
    assert out.dtype == torch.float32  # float32 at the interface


@pytest.mark.slow
def test_compile_builds_a_graph(tmp_path):
    import torch._dynamo
    from torch._dynamo.utils import counters

    pipeline = _mlp_pipeline()
    optimizer = OPTIMIZERS.get("compile")
    if optimizer.applicable(pipeline, _context(tmp_path)):
        pytest.skip("no compiler here")
    torch._dynamo.reset()
    counters.clear()
    applied = optimizer.apply(pipeline, make_config(optimizer, {}), _context(tmp_path))
    with torch.inference_mode():
        applied.pipeline.forward(pipeline.inputs)
    assert counters["stats"]["unique_graphs"] >= 1, dict(counters["stats"])
    torch._dynamo.reset()


# --- a real model: a transformers classifier whose logits share a large offset -------------------
def test_int8_and_bf16_that_flip_a_real_classifiers_labels_are_rejected(tmp_path):
    from accel.optimizing.recipes import parse_recipe
    from accel.optimizing.search.engine import ACCEPTED, NOT_APPLICABLE, run_engine

    pipeline = accel.load(PLANTED / "opt_offset_bert.py")  # BERT at random init, logits with a large offset
    recipe = parse_recipe(
        {
            "name": "low",
            "target": "latency",
            "guard": {"min_cosine": 0.995, "max_relative_error": 0.1},  # the built-in low-precision rules' bounds
            "rules": [{"name": "low", "try": ["quantize.int8_dynamic", "precision.bf16"]}],
        }
    )
    result = run_engine(pipeline, recipe, _context(tmp_path), budget_seconds=25)
    int8 = next(s for s in result.steps if s.optimizer == "quantize.int8_dynamic")
    assert int8.verdict != ACCEPTED and int8.fidelity["top1_agreement"] < 0.9, int8.to_dict()
    assert "centered cosine" in int8.reason or "top-1" in int8.reason
    bf16 = next(s for s in result.steps if s.optimizer == "precision.bf16")
    assert bf16.verdict == NOT_APPLICABLE or ("centered cosine" in bf16.reason or "top-1" in bf16.reason)
    assert result.choices == ()
    # What the old guard looked at: one cosine over the flattened logits, and it is near 1.
    quantized = (
        OPTIMIZERS.get("quantize.int8_dynamic")
        .apply(pipeline, make_config(OPTIMIZERS.get("quantize.int8_dynamic"), {}), _context(tmp_path))
        .pipeline
    )
    batch = pipeline.example_batch()
    with torch.inference_mode():
        a, b = pipeline.forward(batch).logits.flatten(), quantized.forward(batch).logits.flatten()
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.9999


def test_ort_counts_only_its_session_as_a_per_process_cost(tmp_path):
    """The export is paid once at optimize time; a process applying the lock only builds a session,
    so that is what the engine spreads over the recipe's passes."""
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 8)).eval()
    pipeline = accel.Pipeline(model=model, inputs=(torch.randn(4, 64),))
    optimizer = OPTIMIZERS.get("onnx.runtime")
    applied = optimizer.apply(pipeline, optimizer.Config(), Context(machine=describe_machine("cpu"), workdir=tmp_path))
    assert applied.recurring_seconds is not None
    assert 0 < applied.per_process_seconds < applied.setup_seconds
