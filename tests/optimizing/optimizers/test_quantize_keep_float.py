"""quantize.int8_dynamic's last rungs: the Linear layers whose int8 output differs most from their
float output, measured on the example batch, are left in float (optimizers._sensitivity)."""

from __future__ import annotations

import pytest
import torch

import accel
from accel.core.machine import describe_machine
from accel.optimizing.optimizers import OPTIMIZERS, Context
from accel.optimizing.optimizers.quantize import KEEP_FLOAT_LADDER, QuantizeConfig
from accel.optimizing.search.fidelity import compare_outputs


def _mlp_with_one_fragile_layer() -> torch.nn.Module:
    """Four Linear layers; layer 6's input has one feature 1000x the rest (layer 4's bias), which
    layer 6 ignores (a zero weight column): one int8 scale for that input rounds every feature
    that matters to zero, while the other layers' inputs quantize well."""
    torch.manual_seed(0)
    layers = [torch.nn.Linear(64, 64) for _ in range(4)]
    model = torch.nn.Sequential(
        layers[0], torch.nn.ReLU(), layers[1], torch.nn.ReLU(), layers[2], torch.nn.ReLU(), layers[3]
    )
    with torch.no_grad():
        layers[2].bias[0] = 1000.0
        layers[3].weight[:, 0] = 0.0
    return model.eval()


def _apply(model: torch.nn.Module, config: QuantizeConfig, tmp_path, float_layers=None):
    pipeline = accel.Pipeline(model=model, inputs=(torch.randn(16, 64, generator=torch.Generator().manual_seed(1)),))
    optimizer = OPTIMIZERS.get("quantize.int8_dynamic")
    context = Context(machine=describe_machine("cpu"), workdir=tmp_path)
    return pipeline, optimizer.apply(pipeline, config, context, float_layers)


def test_the_measured_worst_layer_is_left_in_float_and_the_rest_quantized(tmp_path):
    model = _mlp_with_one_fragile_layer()
    pipeline, applied = _apply(model, QuantizeConfig(per_channel=True, keep_float=0.25), tmp_path)
    assert applied.state["float_layers"] == ["6"]  # the fragile layer, by its module name
    quantized = applied.pipeline.model
    assert type(quantized[6]) is torch.nn.Linear  # left in float
    assert all(type(quantized[i]) is not torch.nn.Linear for i in (0, 2, 4))  # int8 dynamic Linear
    _, whole = _apply(model, QuantizeConfig(per_channel=True), tmp_path)
    x = pipeline.example_batch()[0]
    with torch.no_grad():
        exact = model(x)
        kept, all_int8 = quantized(x), whole.pipeline.model(x)
    assert compare_outputs(exact, kept).cosine > compare_outputs(exact, all_int8).cosine
    assert compare_outputs(exact, kept).cosine > 0.999


def test_the_lock_reapplies_the_layers_it_recorded_without_measuring_again(tmp_path):
    model = _mlp_with_one_fragile_layer()
    _, applied = _apply(model, QuantizeConfig(per_channel=True), tmp_path, float_layers=["0"])
    assert applied.state["float_layers"] == ["0"] and type(applied.pipeline.model[0]) is torch.nn.Linear
    restored = OPTIMIZERS.get("quantize.int8_dynamic").restore(
        accel.Pipeline(model=model, inputs=(torch.randn(2, 64),)),
        QuantizeConfig(per_channel=True, keep_float=0.25),
        {"backend": "eager", "float_layers": ["2"]},
        tmp_path,
    )
    assert type(restored.model[2]) is torch.nn.Linear and type(restored.model[6]) is not torch.nn.Linear


def test_the_ladder_ends_with_the_worst_layers_in_float():
    optimizer = OPTIMIZERS.get("quantize.int8_dynamic")
    rungs = optimizer.safer_variants(QuantizeConfig(), describe_machine("cpu"))
    assert rungs[0] == QuantizeConfig(per_channel=True)
    assert [r.keep_float for r in rungs[1:]] == list(KEEP_FLOAT_LADDER)
    assert optimizer.safer_variants(rungs[-1], describe_machine("cpu")) == []


def test_onnx_int8_dynamic_leaves_the_worst_layer_s_node_in_float(tmp_path):
    import onnx

    model = _mlp_with_one_fragile_layer()
    pipeline = accel.Pipeline(model=model, inputs=(torch.randn(16, 64, generator=torch.Generator().manual_seed(1)),))
    optimizer = OPTIMIZERS.get("onnx.int8_dynamic")
    context = Context(machine=describe_machine("cpu"), workdir=tmp_path)
    applied = optimizer.apply(pipeline, optimizer.Config(per_channel=True, keep_float=0.25), context)
    assert applied.state["float_layers"] == ["6"] and applied.state["float_nodes"] == 1
    graph = onnx.load(str(tmp_path / applied.state["onnx_file"])).graph
    float_ops = [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm")]
    assert float_ops and all(name.startswith("/6/") for name in float_ops)  # the rest became int8 kernels
    plain = optimizer.apply(pipeline, optimizer.Config(per_channel=True), context)
    x = pipeline.example_batch()[0]
    with torch.no_grad():
        exact = model(x)
    kept = compare_outputs(exact, applied.pipeline.model(x)).cosine
    # 0.999 and more with VNNI; 0.996 against 0.81 on an AVX2-only EPYC (ORT's U8S8 kernels saturate there)
    assert kept > compare_outputs(exact, plain.pipeline.model(x)).cosine and kept > 0.99
    ladder = optimizer.safer_variants(optimizer.Config(), describe_machine("cpu"))
    assert [r.keep_float for r in ladder[-2:]] == list(KEEP_FLOAT_LADDER)


@pytest.mark.parametrize("exporter", ["auto", "torchscript"])
def test_onnx_keep_float_finds_a_transformers_models_layers_under_either_exporter(tmp_path, exporter):
    """A keyword-called BERT: torch.export names nodes `node_MatMul_N` (the layer is in its
    name_scopes metadata); the TorchScript tracer, through the keyword wrapper, `/model/encoder/layer.0/...`."""
    import onnx
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    model = BertModel(config).eval()
    ids = torch.randint(1, 1000, (2, 16))
    pipeline = accel.Pipeline(model=model, inputs={"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    optimizer = OPTIMIZERS.get("onnx.int8_dynamic")
    context = Context(machine=describe_machine("cpu"), workdir=tmp_path)
    config_ = optimizer.Config(per_channel=True, keep_float=0.25, exporter=exporter)
    applied = optimizer.apply(pipeline, config_, context)
    layers = applied.state["float_layers"]
    assert len(layers) == 4 and all(name.startswith("encoder.layer.") for name in layers)
    graph = onnx.load(str(tmp_path / applied.state["onnx_file"])).graph
    assert sum(n.op_type in ("MatMul", "Gemm") for n in graph.node) >= applied.state["float_nodes"] >= 4
