"""onnx.generate_weight_only: the corpus GPT-2's generate loop (tests/real/gpt2_generate_cached.py, 4
layers of 256 at random init, no download) in ONNX Runtime with its decode step's weights as
MatMulNBits.

The tiny model's 14 MB of weights fit in any L3, so the cache-size reader is patched to say 1 MB:
the model stands for one whose weights are streamed from memory each token (GPT-2 small's 500 MB;
benchmarks/generate_loop.py measures that one). What must hold on any CPU: the step graph holds
MatMulNBits nodes for every Conv1D projection and the lm_head, and no float MatMul with a constant
weight is left; the loop runs in ORT; the tokens are eager generate()'s, or the exact guard refuses
them with its reason; the lock re-applies it with its ONNX file listed and hashed; weights that fit
in cache make it not applicable, with the sizes said, before any export.
"""

from __future__ import annotations

import collections
import shutil
from pathlib import Path

import onnx
import pytest
import torch

import accel
from accel.core.errors import LockError, RecipeError
from accel.core.machine import describe_machine
from accel.optimizing.lock import Lock, LockEntry, apply_lock, artifact_digests, file_sha256, write_lock
from accel.optimizing.optimizers import OPTIMIZERS, Applied, Context, _weight_only, make_config
from accel.optimizing.optimizers.onnx_generate import OrtGenerator
from accel.optimizing.recipes.schema import Guard
from accel.optimizing.search.validation import Validator
from tests.paths import REAL

NAME = "onnx.generate_weight_only"
NEW = 48  # tests/real/gpt2_lm.py generates 48 tokens
LAYERS = 4
SMALL_CACHE_BYTES = 1024**2  # below the corpus GPT-2's 14 MB of Linear/Conv1D weights
LARGE_CACHE_BYTES = 1024**3


def _context(folder: Path) -> Context:
    return Context(machine=describe_machine("cpu"), workdir=folder)


def _cache_of(size: int):
    return lambda machine: (size, "L3")


def _eager(pipeline: accel.Pipeline) -> torch.Tensor:
    with torch.inference_mode():
        return pipeline.forward(pipeline.example_batch())


@pytest.fixture(scope="module")
def gpt2() -> accel.Pipeline:
    return accel.load(REAL / "gpt2_generate_cached.py")


@pytest.fixture(scope="module", params=[4, 8])
def applied(request, gpt2, tmp_path_factory) -> tuple[int, Applied, Path]:
    folder = tmp_path_factory.mktemp(f"generate-weight-only-{request.param}")
    optimizer = OPTIMIZERS.get(NAME)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_weight_only, "largest_cache_bytes", _cache_of(SMALL_CACHE_BYTES))
        assert optimizer.applicable(gpt2, _context(folder)) is None
    config = make_config(optimizer, {"bits": request.param})
    return request.param, optimizer.apply(gpt2, config, _context(folder)), folder


def test_the_step_graph_holds_matmul_nbits_nodes(applied, gpt2):
    bits, result, folder = applied
    path = folder / result.state["onnx_file"]
    graph = onnx.load(str(path)).graph
    ops = collections.Counter(node.op_type for node in graph.node)
    # four Conv1D projections per block (exported as Gemm, rewritten as MatMul), and the lm_head
    assert ops["MatMulNBits"] >= 4 * LAYERS + 1 and ops["Gemm"] == 0
    constants = {init.name for init in graph.initializer}
    assert not [node.name for node in graph.node if node.op_type == "MatMul" and node.input[1] in constants]
    assert result.state["matmul_nbits_nodes"] == ops["MatMulNBits"] and result.state["bits"] == bits
    assert result.notes["matmul_nbits_nodes"] == ops["MatMulNBits"]
    assert not list(folder.glob("*-fp32.onnx"))  # the fp32 export it was made from is removed
    # every Linear/Conv1D weight (the lm_head tied to the embedding counted once) stored in 4 or 8 bits
    packed = sum(len(init.raw_data) for init in graph.initializer if init.name.endswith(f"_Q{bits}"))
    assert packed == _weight_only.linear_weight_bytes(gpt2.model) * bits // 32


def test_the_loop_runs_in_onnx_runtime_and_the_guard_decides_on_the_tokens(applied, gpt2):
    _, result, _ = applied
    model = result.pipeline.model
    assert isinstance(model, OrtGenerator) and model is not gpt2.model
    eager_calls, step_calls = [], []
    hooks = [
        gpt2.model.register_forward_pre_hook(lambda *_: eager_calls.append(1)),
        model.step.register_forward_pre_hook(lambda *_: step_calls.append(1)),
    ]
    try:
        got = _eager(result.pipeline)
    finally:
        for hook in hooks:
            hook.remove()
    assert eager_calls == [] and len(step_calls) == NEW
    assert got.shape == (1, 32 + NEW)
    same = torch.equal(got, _eager(gpt2))
    fidelity = Validator(gpt2, per_sample_results=False).check(result.pipeline, Guard())
    failure = fidelity.failure(Guard())
    # exactly onnx.generate's guard: the same tokens pass, any other token is refused with the reason
    assert (failure is None) == same, failure
    if not same:
        assert "exact outputs differ" in failure


def _write_lock(folder: Path, state: dict, bits: int) -> tuple[Path, dict[str, str]]:
    file = folder / "pipeline.py"
    file.write_text("# the pipeline file the lock is for\n")
    entries = (LockEntry(NAME, {"bits": bits}, state),)
    artifacts = artifact_digests(folder, entries)
    write_lock(
        folder,
        Lock(pipeline_file=file.name, pipeline_sha256=file_sha256(file), entries=entries, artifacts=artifacts),
    )
    return file, artifacts


def test_the_lock_reapplies_it_and_refuses_a_changed_file(applied, gpt2, tmp_path):
    bits, result, folder = applied
    copied = tmp_path / "lock"
    shutil.copytree(folder, copied)
    file, artifacts = _write_lock(copied, result.state, bits)
    onnx_name = result.state["onnx_file"]
    assert artifacts == {onnx_name: file_sha256(copied / onnx_name)}  # listed and hashed
    restored = apply_lock(gpt2, copied, file)
    assert isinstance(restored.model, OrtGenerator) and restored.model is not result.pipeline.model
    ops = collections.Counter(node.op_type for node in onnx.load(str(restored.model.onnx_path)).graph.node)
    assert ops["MatMulNBits"] == result.state["matmul_nbits_nodes"]
    assert torch.equal(_eager(restored), _eager(result.pipeline))
    onnx_file = copied / onnx_name
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")
    with pytest.raises(LockError, match="changed since"):
        apply_lock(gpt2, copied, file)


def test_weights_that_fit_in_cache_make_it_not_applicable_before_any_export(gpt2, tmp_path, monkeypatch):
    optimizer = OPTIMIZERS.get(NAME)
    monkeypatch.setattr(_weight_only, "largest_cache_bytes", _cache_of(LARGE_CACHE_BYTES))
    reason = optimizer.applicable(gpt2, _context(tmp_path)) or ""
    assert reason.startswith("the Linear weights (13.6 MB) fit in the L3 (1073.7 MB)"), reason
    monkeypatch.undo()
    # the machine's own caches as read: the tiny model fits in any CPU's largest cache
    assert "fit in the" in (optimizer.applicable(gpt2, _context(tmp_path)) or "")
    assert not list(tmp_path.iterdir())  # nothing exported


def test_a_loop_it_cannot_run_is_said_before_the_cache_rule(gpt2, tmp_path, monkeypatch):
    monkeypatch.setattr(_weight_only, "largest_cache_bytes", _cache_of(SMALL_CACHE_BYTES))
    beams = gpt2.replace(generate=lambda model, ids: model.generate(ids, max_new_tokens=4, num_beams=2))
    assert "beam search (num_beams=2)" in (OPTIMIZERS.get(NAME).applicable(beams, _context(tmp_path)) or "")
    assert not list(tmp_path.iterdir())


def test_a_failed_4_bit_step_falls_back_to_8_bit():
    optimizer = OPTIMIZERS.get(NAME)
    four = make_config(optimizer, {})
    assert four.bits == 4 and four.block_size == 32 and four.accuracy_level == 4
    assert [c.bits for c in optimizer.safer_variants(four, describe_machine("cpu"))] == [8]
    assert optimizer.safer_variants(make_config(optimizer, {"bits": 8}), describe_machine("cpu")) == []
    assert "generation" in optimizer.cures


@pytest.mark.parametrize(
    "params, match",
    [
        ({"bits": 3}, "bits must be 4 or 8"),
        ({"block_size": 48}, "block_size must be one of"),
        ({"accuracy_level": 7}, "accuracy_level must lie in 0..4"),
        ({"opset": 11}, "opset must"),
    ],
)
def test_bad_parameters_are_recipe_errors(params, match):
    with pytest.raises(RecipeError, match=match):
        make_config(OPTIMIZERS.get(NAME), params)
