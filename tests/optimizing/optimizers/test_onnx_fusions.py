"""ORT's transformer fusions (`onnx.fusions`, `onnx.fusions_int8`) on a small transformers BERT at
random init: the fused kernels are there and counted, outputs agree at other batch sizes and
padded lengths, a graph where nothing matches is refused in one line, and the lock re-applies it."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import onnx
import pytest
import torch
from transformers import BertConfig, BertModel

import accel
from accel.core.errors import AccelError, LockError
from accel.core.machine import describe_machine
from accel.optimizing.lock import Lock, LockEntry, apply_lock, artifact_digests, file_sha256, write_lock
from accel.optimizing.optimizers import OPTIMIZERS, Context, make_config
from accel.optimizing.optimizers.onnx_runtime import OrtModel
from accel.optimizing.search.fidelity import compare_outputs

# The int8 guard of the built-in recipes' int8 rules.
INT8_MIN_COSINE = 0.995
CONFIG = dict(
    vocab_size=2000,
    hidden_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=256,
    max_position_embeddings=256,
)


def bert(attention: str = "eager") -> BertModel:
    torch.manual_seed(0)
    return BertModel(BertConfig(**CONFIG, attn_implementation=attention)).eval()


def batch(rows: int, length: int, padded_from: int | None = None) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(rows * 1000 + length)
    ids = torch.randint(1, CONFIG["vocab_size"], (rows, length), generator=generator)
    mask = torch.ones_like(ids)
    if padded_from is not None:
        mask[0, padded_from:] = 0
        ids[0, padded_from:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def context(folder: Path) -> Context:
    return Context(machine=describe_machine("cpu"), workdir=folder)


@pytest.fixture(scope="module")
def model() -> BertModel:
    return bert()


@pytest.fixture(scope="module", params=["onnx.fusions", "onnx.fusions_int8"])
def applied(request, model, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param.replace(".", "-"))
    pipeline = accel.Pipeline(model=model, inputs=batch(2, 16))
    optimizer = OPTIMIZERS.get(request.param)
    assert optimizer.applicable(pipeline, context(folder)) is None
    return request.param, pipeline, optimizer.apply(pipeline, make_config(optimizer, {}), context(folder)), folder


def _ops(folder: Path, state: dict) -> collections.Counter:
    graph = onnx.load(str(folder / state["onnx_file"]), load_external_data=False).graph
    return collections.Counter(node.op_type for node in graph.node)


def test_the_fused_kernels_are_in_the_graph_and_counted(applied):
    name, _, result, folder = applied
    fused = result.state["fused_nodes"]
    assert fused["Attention"] == CONFIG["num_hidden_layers"] and fused["SkipLayerNormalization"] > 0
    assert result.notes["fused_nodes"] == fused and result.state["fused_node_count"] == sum(fused.values())
    assert result.state["num_heads"] == 4 and result.state["hidden_size"] == 128
    ops = _ops(folder, result.state)
    if name == "onnx.fusions":
        assert ops["Attention"] == 2 and ops["SkipLayerNormalization"] > 0
    else:  # the fused attention quantized: QAttention, the rest through DynamicQuantizeLinear
        assert ops["QAttention"] == 2 and ops["DynamicQuantizeLinear"] > 0
        assert result.state["quantized_nodes"]["QAttention"] == 2
    assert json.loads(json.dumps(result.state)) == result.state  # the lock can record it


@pytest.mark.parametrize("rows, length, padded_from", [(1, 7, None), (3, 40, 12), (2, 16, 5)])
def test_outputs_agree_at_other_batch_sizes_and_lengths(applied, model, rows, length, padded_from):
    name, _, result, _ = applied
    inputs = batch(rows, length, padded_from)
    with torch.inference_mode():
        expected = model(**inputs)
    got = result.pipeline.model(**inputs)  # keyword call, as the original
    assert type(got) is type(expected) and list(got.keys()) == list(expected.keys())
    assert got.last_hidden_state.shape == (rows, length, CONFIG["hidden_size"])
    fidelity = compare_outputs(expected, got)
    if name == "onnx.fusions":
        assert torch.allclose(got.last_hidden_state, expected.last_hidden_state, atol=1e-4)
    assert fidelity.cosine >= INT8_MIN_COSINE


def test_the_lock_reapplies_it_and_refuses_a_changed_file(applied, tmp_path):
    name, pipeline, result, folder = applied
    file = folder / "pipeline.py"
    file.write_text("# the pipeline file the lock is for\n")
    entries = (LockEntry(name, {}, result.state),)
    write_lock(
        folder,
        Lock(
            pipeline_file=file.name,
            pipeline_sha256=file_sha256(file),
            entries=entries,
            artifacts=artifact_digests(folder, entries),
        ),
    )
    restored = apply_lock(pipeline, folder, file)
    assert isinstance(restored.model, OrtModel) and restored.model is not result.pipeline.model
    inputs = batch(2, 24, 10)
    assert torch.equal(restored.model(**inputs).last_hidden_state, result.pipeline.model(**inputs).last_hidden_state)
    copy = tmp_path / "lock"
    copy.mkdir()
    for path in filter(Path.is_file, folder.iterdir()):  # the work folder's kept exports stay
        copy.joinpath(path.name).write_bytes(path.read_bytes())
    onnx_file = copy / result.state["onnx_file"]
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")
    with pytest.raises(LockError, match="changed since"):
        apply_lock(pipeline, copy, copy / file.name)


def test_a_model_without_transformer_subgraphs_is_refused_in_one_line(tmp_path):
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 4)).eval()
    pipeline = accel.Pipeline(model=mlp, inputs=torch.randn(2, 16))
    optimizer = OPTIMIZERS.get("onnx.fusions")
    with pytest.raises(AccelError) as info:
        optimizer.apply(pipeline, make_config(optimizer, {}), context(tmp_path))
    assert info.value.message == "no transformer subgraph matched (0 fused nodes)"
    assert not list(tmp_path.glob("*.onnx"))  # nothing half-made is left behind


def test_an_sdpa_model_is_exported_from_an_eager_copy_and_left_as_it_was(tmp_path):
    model = bert("sdpa")
    pipeline = accel.Pipeline(model=model, inputs=batch(2, 16))
    optimizer = OPTIMIZERS.get("onnx.fusions")
    result = optimizer.apply(pipeline, make_config(optimizer, {}), context(tmp_path))
    assert result.state["attention_switched_from"] == "sdpa" and result.state["fused_nodes"]["Attention"] == 2
    assert model.config._attn_implementation == "sdpa" and pipeline.model is model
    inputs = batch(3, 20, 8)
    with torch.inference_mode():
        expected = model(**inputs)
    assert torch.allclose(result.pipeline.model(**inputs).last_hidden_state, expected.last_hidden_state, atol=1e-4)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"exporter": "dynamo"}, "exporter must be torchscript"),
        ({"model_type": "llama"}, "model_type must be auto or one of"),
        ({"num_heads": -1}, "num_heads must be >= 0"),
    ],
)
def test_bad_parameters_are_recipe_errors(params, match):
    with pytest.raises(AccelError, match=match):
        make_config(OPTIMIZERS.get("onnx.fusions"), params)


def test_a_model_without_attention_is_not_applicable_before_any_export(tmp_path):
    mlp = accel.Pipeline(model=torch.nn.Sequential(torch.nn.Linear(8, 8)).eval(), inputs=(torch.randn(2, 8),))
    context = Context(machine=describe_machine(), workdir=tmp_path)
    for name in ("onnx.fusions", "onnx.fusions_int8"):
        assert "no attention layer" in OPTIMIZERS.get(name).applicable(mlp, context)
    assert not list(tmp_path.iterdir())  # nothing exported
    bert = accel.Pipeline(
        model=BertModel(
            BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=50)
        ).eval(),
        inputs=(torch.randint(0, 50, (1, 8)),),
    )
    assert OPTIMIZERS.get("onnx.fusions").applicable(bert, context) is None
