"""`onnx.weight_only` (ORT MatMulNBits) on a batch-1 wide MLP whose 134 MB of fp32 weights are far
beyond any L3: the weights are really stored as 4- and 8-bit MatMulNBits (nodes counted, the file
shrunk), outputs stay within the guard, the lock re-applies it; a model whose weights fit in cache
is refused before any export; a transformers GPT-2 (Conv1D layers) is quantized too."""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

import accel
from accel.core.errors import AccelError, LockError
from accel.core.machine import describe_machine
from accel.optimizing.lock import Lock, LockEntry, apply_lock, artifact_digests, file_sha256, write_lock
from accel.optimizing.optimizers import OPTIMIZERS, Context, make_config
from accel.optimizing.optimizers.onnx_runtime import OrtModel
from accel.optimizing.optimizers.onnx_weight_only import linear_weight_bytes
from accel.optimizing.recipes.schema import Guard
from accel.optimizing.search.fidelity import compare_outputs

pytestmark = pytest.mark.slow

# The guard of the built-in recipes' int8 rules.
INT8_GUARD = Guard(min_cosine=0.995, max_relative_error=0.1)
# 4-bit round-to-nearest on uniform random-init weights errs about 0.6% in cosine over three layers.
FOUR_BIT_MIN_COSINE = 0.99
FP32_WEIGHT_BYTES = (2048 * 4096 + 4096 * 4096 + 4096 * 2048) * 4


def wide_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(2048, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 2048)
    ).eval()


def context(folder: Path, cache_bytes: dict[str, int] | None = None) -> Context:
    machine = describe_machine("cpu")
    if cache_bytes is not None:
        machine = dataclasses.replace(machine, cache_bytes=cache_bytes)
    return Context(machine=machine, workdir=folder)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return wide_mlp()


@pytest.fixture(scope="module", params=[4, 8])
def applied(request, model, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"weight-only-{request.param}")
    pipeline = accel.Pipeline(model=model, inputs=(torch.randn(1, 2048),))
    optimizer = OPTIMIZERS.get("onnx.weight_only")
    assert linear_weight_bytes(model) == FP32_WEIGHT_BYTES
    assert optimizer.applicable(pipeline, context(folder)) is None
    config = make_config(optimizer, {"bits": request.param})
    return request.param, pipeline, optimizer.apply(pipeline, config, context(folder)), folder


def test_the_weights_are_stored_as_matmul_nbits(applied):
    bits, _, result, folder = applied
    path = folder / result.state["onnx_file"]
    ops = collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)
    assert ops["MatMulNBits"] == 3 and ops["Gemm"] == 0 and ops["MatMul"] == 0
    assert result.state["matmul_nbits_nodes"] == 3 and result.state["gemms_rewritten"] == 3
    assert result.notes["matmul_nbits_nodes"] == 3 and result.state["bits"] == bits
    # 8x (4-bit) or 4x (8-bit) fewer weight bytes than fp32, plus an fp32 scale per block of 32
    assert path.stat().st_size < FP32_WEIGHT_BYTES * (bits + 32 / 32) / 32 * 1.05
    assert isinstance(result.pipeline.model, OrtModel)


@pytest.mark.parametrize("rows", [1, 5])
def test_outputs_stay_within_the_guard(applied, model, rows):
    bits, _, result, _ = applied
    inputs = torch.randn(rows, 2048, generator=torch.Generator().manual_seed(rows))
    with torch.inference_mode():
        expected = model(inputs)
    got = result.pipeline.model(inputs)
    assert got.shape == expected.shape
    fidelity = compare_outputs(expected, got)
    if bits == 8:
        assert fidelity.failure(INT8_GUARD) is None
    else:
        assert fidelity.cosine >= FOUR_BIT_MIN_COSINE


def test_the_lock_reapplies_it_and_refuses_a_changed_file(applied, tmp_path):
    _, pipeline, result, folder = applied
    file = folder / "pipeline.py"
    file.write_text("# the pipeline file the lock is for\n")
    entries = (LockEntry("onnx.weight_only", {"bits": result.state["bits"]}, result.state),)
    artifacts = artifact_digests(folder, entries)
    assert list(artifacts) == [result.state["onnx_file"]]  # listed and hashed
    write_lock(
        folder,
        Lock(pipeline_file=file.name, pipeline_sha256=file_sha256(file), entries=entries, artifacts=artifacts),
    )
    restored = apply_lock(pipeline, folder, file)
    assert isinstance(restored.model, OrtModel) and restored.model is not result.pipeline.model
    inputs = torch.randn(2, 2048)
    assert torch.equal(restored.model(inputs), result.pipeline.model(inputs))
    copy = tmp_path / "lock"
    copy.mkdir()
    for path in filter(Path.is_file, folder.iterdir()):  # the work folder's kept exports stay
        copy.joinpath(path.name).write_bytes(path.read_bytes())
    onnx_file = copy / result.state["onnx_file"]
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")
    with pytest.raises(LockError, match="changed since"):
        apply_lock(pipeline, copy, copy / file.name)


def test_weights_that_fit_in_cache_are_refused_before_any_export(model, tmp_path):
    optimizer = OPTIMIZERS.get("onnx.weight_only")
    small = accel.Pipeline(
        model=nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 8)).eval(), inputs=(torch.randn(1, 256),)
    )
    reason = optimizer.applicable(small, context(tmp_path, {"L1d": 32 * 1024, "L2": 1024**2, "L3": 32 * 1024**2}))
    assert reason.startswith("the Linear weights (0.3 MB) fit in the L3 (33.6 MB)")
    # no cache size known: a documented fallback threshold, still refusing the small model
    assert "size unknown" in optimizer.applicable(small, context(tmp_path, {}))
    # the wide MLP on a machine with a 256 MB cache: its 134 MB would stay cached
    assert "fit in the L3" in optimizer.applicable(
        accel.Pipeline(model=model, inputs=(torch.randn(1, 2048),)), context(tmp_path, {"L3": 256 * 1024**2})
    )
    conv = accel.Pipeline(model=nn.Sequential(nn.Conv2d(3, 8, 3)).eval(), inputs=(torch.randn(1, 3, 8, 8),))
    assert "no nn.Linear" in optimizer.applicable(conv, context(tmp_path))
    assert not list(tmp_path.iterdir())  # nothing exported


def test_a_failed_4_bit_candidate_falls_back_to_8_bit():
    optimizer = OPTIMIZERS.get("onnx.weight_only")
    four = make_config(optimizer, {})
    assert four.bits == 4 and four.accuracy_level == 4
    assert [c.bits for c in optimizer.safer_variants(four, describe_machine("cpu"))] == [8]
    assert optimizer.safer_variants(make_config(optimizer, {"bits": 8}), describe_machine("cpu")) == []


@pytest.mark.parametrize(
    "params, match",
    [
        ({"bits": 3}, "bits must be 4 or 8"),
        ({"block_size": 48}, "block_size must be one of"),
        ({"accuracy_level": 7}, "accuracy_level must lie in 0..4"),
        ({"group": 32}, "has no parameter 'group'"),
    ],
)
def test_bad_parameters_are_recipe_errors(params, match):
    with pytest.raises(AccelError, match=match):
        make_config(OPTIMIZERS.get("onnx.weight_only"), params)


def test_a_gpt2_has_its_conv1d_projections_quantized(tmp_path):
    """A real transformers model: GPT-2's Conv1D layers export as Gemm (no transB) and are quantized;
    the machine is told a 1 MB cache so that a small config stands for GPT-2's 340 MB of weights."""
    torch.manual_seed(0)
    config = GPT2Config(n_embd=128, n_layer=2, n_head=4, vocab_size=500, n_positions=64, use_cache=False)
    model = GPT2LMHeadModel(config).eval()
    ids = torch.randint(0, 500, (2, 16))
    pipeline = accel.Pipeline(model=model, inputs=(ids,))
    optimizer = OPTIMIZERS.get("onnx.weight_only")
    ctx = context(tmp_path, {"L3": 1024**2})
    assert optimizer.applicable(pipeline, ctx) is None
    result = optimizer.apply(pipeline, make_config(optimizer, {"bits": 8}), ctx)
    # four Conv1D projections per block, and the lm_head
    assert result.state["matmul_nbits_nodes"] >= 4 * config.n_layer
    other = torch.randint(0, 500, (2, 24))
    with torch.inference_mode():
        expected = model(other)
    got = result.pipeline.model(other)
    assert type(got) is type(expected) and got.logits.shape == expected.logits.shape
    assert compare_outputs(expected.logits, got.logits).failure(INT8_GUARD) is None
