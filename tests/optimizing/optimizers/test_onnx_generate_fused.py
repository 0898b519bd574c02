"""onnx.generate_fused and onnx.generate_fused_int8: onnx.generate's loop on a decode step that ORT's
transformer fusions rewrote (transformers GPT-2 at random init from a small config, tests/real/; no download).

What must hold on any CPU: the GPT-2 step fuses (SkipLayerNormalization, FastGelu nodes in the file the
session runs), its inputs and outputs keep the past/present names, the loop decodes eager generate()'s
tokens; the lock re-applies the fused step; int8 is taken on the fused graph; a GPT-2 built without
LayerNorm or GELU fuses nothing and is not applicable, saying so, with nothing left behind.
"""

from __future__ import annotations

import collections
from pathlib import Path

import onnx
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import accel
from accel.core.errors import RecipeError
from accel.core.machine import describe_machine
from accel.optimizing.lock import Lock, LockEntry, apply_lock, artifact_digests, file_sha256, write_lock
from accel.optimizing.optimizers import OPTIMIZERS, Applied, Context, NotApplicable, make_config
from accel.optimizing.optimizers.onnx_generate import OrtGenerator
from accel.optimizing.recipes.schema import Guard
from accel.optimizing.search.validation import Validator
from tests.paths import REAL

NEW = 48  # tests/real/gpt2_lm.py generates 48 tokens


def _context(folder: Path) -> Context:
    return Context(machine=describe_machine("cpu"), workdir=folder)


def _apply(name: str, pipeline: accel.Pipeline, folder: Path, **params) -> Applied:
    optimizer = OPTIMIZERS.get(name)
    return optimizer.apply(pipeline, make_config(optimizer, params), _context(folder))


def _tokens(pipeline: accel.Pipeline) -> torch.Tensor:
    with torch.inference_mode():
        return pipeline.forward(pipeline.example_batch())


def _ops(path: Path) -> collections.Counter[str]:
    return collections.Counter(node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node)


@pytest.fixture(scope="module")
def gpt2() -> accel.Pipeline:
    return accel.load(REAL / "gpt2_generate_cached.py")


@pytest.fixture(scope="module")
def fused(gpt2, tmp_path_factory) -> tuple[Applied, Path]:
    folder = tmp_path_factory.mktemp("gpt2-fused")
    assert OPTIMIZERS.get("onnx.generate_fused").applicable(gpt2, _context(folder)) is None
    return _apply("onnx.generate_fused", gpt2, folder), folder


def test_the_gpt2_step_fuses_and_the_loop_decodes_the_same_tokens(gpt2, fused):
    applied, folder = fused
    model = applied.pipeline.model
    assert isinstance(model, OrtGenerator) and model is not gpt2.model
    ops = _ops(folder / applied.state["onnx_file"])
    # GPT-2's 4 blocks: two residual LayerNorms each (the last one after ln_f's add), and a tanh GELU each
    assert ops["SkipLayerNormalization"] == applied.state["fused_nodes"]["SkipLayerNormalization"] == 8
    assert ops["FastGelu"] == applied.state["fused_nodes"]["FastGelu"] == 4
    assert applied.state["fused_node_count"] >= 12 and applied.notes["fused_nodes"] == applied.state["fused_nodes"]
    assert applied.state["fusion_model_type"] == "gpt2"
    assert model.step.output_names == model.layout.output_names  # the loop's present names survived the fusions
    step_calls = []
    hook = model.step.register_forward_pre_hook(lambda *_: step_calls.append(1))
    try:
        got = _tokens(applied.pipeline)
    finally:
        hook.remove()
    assert len(step_calls) == NEW
    assert torch.equal(got, _tokens(gpt2))


def test_the_lock_reapplies_the_fused_step(gpt2, fused):
    applied, folder = fused
    file = folder / "pipeline.py"
    file.write_text("# the pipeline file the lock is for\n")
    entries = (LockEntry("onnx.generate_fused", {}, applied.state),)
    lock = Lock(file.name, file_sha256(file), entries, artifacts=artifact_digests(folder, entries))
    write_lock(folder, lock)
    restored = apply_lock(gpt2, folder, file)
    assert isinstance(restored.model, OrtGenerator) and restored.model is not applied.pipeline.model
    assert _ops(restored.model.onnx_path)["FastGelu"] == 4
    assert torch.equal(_tokens(restored), _tokens(gpt2))


@pytest.mark.slow
def test_int8_is_taken_on_the_fused_step_and_the_guard_decides_on_the_tokens(gpt2, tmp_path):
    applied = _apply("onnx.generate_fused_int8", gpt2, tmp_path)
    ops = _ops(tmp_path / applied.state["onnx_file"])
    assert ops["FastGelu"] == 4 and ops["SkipLayerNormalization"] == 8  # quantized on top of the fused kernels
    assert ops["MatMulInteger"] == applied.state["quantized_nodes"]["MatMulInteger"] >= 4 * 4
    assert [path.name for path in tmp_path.glob("*.onnx")] == [applied.state["onnx_file"]]  # fp32 and fused removed
    failure = Validator(gpt2, per_sample_results=False).check(applied.pipeline, Guard())
    assert (failure.failure(Guard()) is None) == torch.equal(_tokens(applied.pipeline), _tokens(gpt2))


def _unfusable(prompt: torch.Tensor) -> accel.Pipeline:
    """A GPT-2 without LayerNorms and with ReLU: no subgraph of its step matches an ORT fusion."""
    torch.manual_seed(0)
    config = GPT2Config(
        n_embd=64, n_layer=2, n_head=2, vocab_size=1024, n_positions=64, activation_function="relu", eos_token_id=None
    )
    model = GPT2LMHeadModel(config).eval()
    for block in model.transformer.h:
        block.ln_1, block.ln_2 = torch.nn.Identity(), torch.nn.Identity()
    model.transformer.ln_f = torch.nn.Identity()

    def generate(model, ids):
        return model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)

    return accel.Pipeline(model=model, inputs=(prompt[:, :8],), generate=generate, name="unfusable_gpt2")


def test_the_step_is_exported_and_fused_once_for_every_candidate_and_rung(gpt2, tmp_path, monkeypatch):
    """The export (17 s on GPT-2 small) and the fusion pass (19-30 s) are paid once per search: the
    fused int8 loop's per-channel rung and the fused fp32 loop begin from copies of the first ones."""
    from onnxruntime.transformers import optimizer as ort_optimizer

    torch.manual_seed(1)  # a GPT-2 of its own: no other test's export of the module's model counts
    model = GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=2, vocab_size=1024, eos_token_id=None)).eval()

    def generate(model, ids):
        return model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=0)

    pipeline = accel.Pipeline(model=model, inputs=(gpt2.example_batch()[0][:, :8],), generate=generate)
    calls = collections.Counter()
    for module, name in ((torch.onnx, "export"), (ort_optimizer, "optimize_model")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, real=real, name=name, **k: calls.update([name]) or real(*a, **k))
    first = _apply("onnx.generate_fused_int8", pipeline, tmp_path)
    rung = _apply("onnx.generate_fused_int8", pipeline, tmp_path, per_channel=True)
    fp32 = _apply("onnx.generate_fused", pipeline, tmp_path)
    assert calls == {"export": 1, "optimize_model": 1}
    assert first.state["fused_nodes"] == rung.state["fused_nodes"] == fp32.state["fused_nodes"]
    assert _ops(tmp_path / rung.state["onnx_file"]) == _ops(
        tmp_path / first.state["onnx_file"]
    )  # per channel: the same ops
    assert torch.equal(_tokens(fp32.pipeline), _tokens(pipeline))
    with torch.no_grad():  # a weight changed in place: the step is exported and fused afresh
        model.lm_head.weight.mul_(2.0)
    _apply("onnx.generate_fused", pipeline, tmp_path)
    assert calls == {"export": 2, "optimize_model": 2}


@pytest.mark.parametrize("name", ["onnx.generate_fused", "onnx.generate_fused_int8"])
def test_a_step_where_nothing_fuses_is_not_applicable_and_says_so(name, gpt2, tmp_path):
    pipeline = _unfusable(gpt2.example_batch()[0])
    assert OPTIMIZERS.get(name).applicable(pipeline, _context(tmp_path)) is None  # known only once exported
    with pytest.raises(NotApplicable) as info:
        _apply(name, pipeline, tmp_path)
    assert info.value.message == "no transformer subgraph matched (0 fused nodes)"
    assert "onnx.generate runs the step unfused" in info.value.hint
    assert not list(tmp_path.glob("*.onnx"))  # nothing half-made is left behind


@pytest.mark.parametrize(
    "params, match",
    [({"model_type": "llama"}, "model_type must be auto or one of"), ({"num_heads": -1}, "num_heads must be >= 0")],
)
def test_bad_fusion_parameters_are_recipe_errors(params, match):
    with pytest.raises(RecipeError, match=match):
        make_config(OPTIMIZERS.get("onnx.generate_fused_int8"), params)
