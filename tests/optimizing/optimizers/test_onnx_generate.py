"""onnx.generate and onnx.generate_int8 on generate loops (transformers GPT-2 and Llama at random init
from small configs, tests/real/; no download).

What must hold on any CPU: the loop runs in an ORT session (the step runs once per token, the eager
forward never), the tokens out are eager generate()'s on the corpus prompt and on a left-padded
batch that ends on eos; a step that picks another token is refused by the guard; the lock re-applies
it and refuses a changed ONNX file; beam search, sampling, an encoder-decoder, a hand-written loop
and a pipeline without a loop are not applicable with their reasons, before any export.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch

import accel
from accel.core.errors import AccelError, LockError, RecipeError
from accel.core.machine import describe_machine
from accel.core.measure import thread_count
from accel.optimizing.lock import Lock, LockEntry, apply_lock, artifact_digests, file_sha256, read_lock, write_lock
from accel.optimizing.optimizers import OPTIMIZERS, Applied, Context, make_config
from accel.optimizing.optimizers.onnx_generate import OrtGenerator
from accel.optimizing.recipes import parse_recipe
from accel.optimizing.recipes.schema import Guard
from accel.optimizing.run import optimize
from accel.optimizing.search.engine import ACCEPTED, SKIPPED
from accel.optimizing.search.validation import Validator
from tests.paths import REAL

NEW = 48  # tests/real/gpt2_lm.py and llama_generate_no_cache.py generate 48 tokens
# A Llama small enough that accel optimize's whole search fits a test's budget on a busy machine.
SMALL_LLAMA = """
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import accel

torch.manual_seed(0)
config = LlamaConfig(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    vocab_size=256, max_position_embeddings=64, bos_token_id=0, eos_token_id=None, pad_token_id=0,
)
model = LlamaForCausalLM(config).eval()
prompt = torch.randint(1, 256, (2, 8), generator=torch.Generator().manual_seed(0))


def generate(model, ids):
    return model.generate(ids, max_new_tokens=8, do_sample=False)


pipeline = accel.Pipeline(model=model, inputs=(prompt,), generate=generate, name="small_llama_generate")
"""


def _context(folder: Path) -> Context:
    return Context(machine=describe_machine("cpu"), workdir=folder)


def _apply(name: str, pipeline: accel.Pipeline, folder: Path, **params) -> Applied:
    optimizer = OPTIMIZERS.get(name)
    return optimizer.apply(pipeline, make_config(optimizer, params), _context(folder))


def _eager(pipeline: accel.Pipeline) -> torch.Tensor:
    with torch.inference_mode():
        return pipeline.forward(pipeline.example_batch())


@pytest.fixture(scope="module")
def gpt2() -> accel.Pipeline:
    return accel.load(REAL / "gpt2_generate_cached.py")


@pytest.fixture(scope="module")
def llama() -> accel.Pipeline:
    return accel.load(REAL / "llama_generate_no_cache.py")


@pytest.fixture(scope="module")
def gpt2_fp32(gpt2, tmp_path_factory) -> tuple[Applied, Path]:
    folder = tmp_path_factory.mktemp("gpt2-generate")
    assert OPTIMIZERS.get("onnx.generate").applicable(gpt2, _context(folder)) is None
    return _apply("onnx.generate", gpt2, folder), folder


@pytest.mark.parametrize("which", ["gpt2", pytest.param("llama", marks=pytest.mark.slow)])
def test_the_loop_runs_in_onnx_runtime_and_decodes_the_same_tokens(which, gpt2, llama, gpt2_fp32, tmp_path):
    pipeline = gpt2 if which == "gpt2" else llama
    applied = gpt2_fp32[0] if which == "gpt2" else _apply("onnx.generate", llama, tmp_path)
    model = applied.pipeline.model
    assert isinstance(model, OrtGenerator) and pipeline.model is not model
    assert type(model.step.session).__name__ == "InferenceSession"
    eager_calls, step_calls = [], []
    hooks = [
        pipeline.model.register_forward_pre_hook(lambda *_: eager_calls.append(1)),
        model.step.register_forward_pre_hook(lambda *_: step_calls.append(1)),
    ]
    try:
        with torch.inference_mode():
            got = applied.pipeline.forward(pipeline.example_batch())
    finally:
        for hook in hooks:
            hook.remove()
    assert eager_calls == [] and len(step_calls) == NEW  # the prompt's step, then one per new token
    assert torch.equal(got, _eager(pipeline))  # the baseline's model is left as it was and agrees
    layout = applied.state["cache_layout"]
    assert layout["layers"] == 4 and layout["kv_heads"] == (4 if which == "gpt2" else 2)


def test_runtime_threads_builds_the_loops_session_again_at_fewer_threads(gpt2, gpt2_fp32, tmp_path):
    loop = gpt2_fp32[0].pipeline
    two = loop.replace(model=loop.model.rethreaded(2))  # whatever the count the fixture was built at
    optimizer = OPTIMIZERS.get("runtime.threads")
    assert optimizer.applicable(two, _context(tmp_path)) is None
    applied = optimizer.apply(two, make_config(optimizer, {"threads": 1}), _context(tmp_path))
    model = applied.pipeline.model
    assert isinstance(model, OrtGenerator) and model.step is not two.model.step
    assert model.step.session.get_session_options().intra_op_num_threads == 1
    assert two.model.step.session.get_session_options().intra_op_num_threads == 2
    assert applied.state == {"threads": 1, "threads_before": 2} and applied.pipeline.forward_wrapper is None
    with torch.inference_mode():
        assert torch.equal(applied.pipeline.forward(gpt2.example_batch()), _eager(gpt2))


def test_runtime_spinning_builds_the_loops_step_again_spinning(gpt2, gpt2_fp32, tmp_path):
    loop = gpt2_fp32[0].pipeline
    two = loop.replace(model=loop.model.rethreaded(2))  # a pool of two threads to spin
    optimizer = OPTIMIZERS.get("runtime.spinning")
    assert optimizer.applicable(two, _context(tmp_path)) is None
    applied = optimizer.apply(two, make_config(optimizer, {}), _context(tmp_path))
    model = applied.pipeline.model
    assert isinstance(model, OrtGenerator) and model.step is not two.model.step
    spins = "session.intra_op.allow_spinning"
    assert model.step.session.get_session_options().get_session_config_entry(spins) == "1"
    assert two.model.step.session.get_session_options().get_session_config_entry(spins) == "0"
    assert model.spinning and model.threads == 2
    with torch.inference_mode():
        assert torch.equal(applied.pipeline.forward(gpt2.example_batch()), _eager(gpt2))


def _padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, 1024, (3, 12), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    mask[2, :2] = 0
    return ids * mask, mask  # left-padded with pad id 0


def test_a_left_padded_batch_that_ends_on_eos_decodes_the_same_tokens(gpt2, gpt2_fp32):
    model = gpt2_fp32[0].pipeline.model
    ids, mask = _padded_batch()
    with torch.inference_mode():
        free = gpt2.model.generate(ids, attention_mask=mask, max_new_tokens=16, do_sample=False, pad_token_id=0)
    eos = int(free[1, 12 + 3])  # what row 1 picks 4th: that row ends there, the others run on (or end too)
    settings = [
        {"max_new_tokens": 16, "eos_token_id": eos, "pad_token_id": 0},
        {"max_new_tokens": 16, "min_new_tokens": 8, "eos_token_id": [eos, 7], "pad_token_id": 0},
        {"max_length": 20, "pad_token_id": 0},
    ]
    for kwargs in settings:
        with torch.inference_mode():
            expected = gpt2.model.generate(ids, attention_mask=mask, do_sample=False, **kwargs)
            got = model.generate(ids, attention_mask=mask, **kwargs)
            unmasked = (gpt2.model.generate(ids, **kwargs), model.generate(ids, **kwargs))  # mask inferred from pad
        assert torch.equal(got, expected), kwargs
        assert torch.equal(*unmasked), kwargs
    with torch.inference_mode():
        row = model.generate(ids, attention_mask=mask, **settings[0])[1, 12:]
    ended = int((row == eos).nonzero()[0])
    assert ended < len(row) - 1 and bool((row[ended + 1 :] == 0).all())  # the eos path ran: row 1 ended, then pads


@pytest.mark.slow
def test_int8_quantizes_the_step_and_the_guard_decides_on_the_tokens(gpt2, gpt2_fp32, tmp_path):
    applied = _apply("onnx.generate_int8", gpt2, tmp_path)
    quantized = applied.state["quantized_nodes"]
    assert quantized["MatMulInteger"] >= 4 * 4  # each GPT-2 Conv1D of the 4 layers, as a transposed Linear
    fp32_bytes = (gpt2_fp32[1] / gpt2_fp32[0].state["onnx_file"]).stat().st_size
    assert (tmp_path / applied.state["onnx_file"]).stat().st_size < 0.5 * fp32_bytes
    assert not list(tmp_path.glob("*-fp32.onnx"))  # the fp32 export it was made from is removed
    got = _eager(applied.pipeline)
    assert got.shape == (1, 32 + NEW)
    failure = Validator(gpt2, per_sample_results=False).check(applied.pipeline, Guard())
    assert (failure.failure(Guard()) is None) == torch.equal(got, _eager(gpt2))


@pytest.mark.slow
def test_a_step_that_picks_other_tokens_is_refused_by_the_guard(llama, tmp_path):
    skewed = copy.deepcopy(llama.model)
    with torch.no_grad():
        skewed.lm_head.weight[7] += 0.5  # token 7 wins more often: a step that rounds differently
    applied = _apply("onnx.generate", llama.replace(model=skewed), tmp_path)
    candidate = llama.replace(model=applied.pipeline.model)
    fidelity = Validator(llama, per_sample_results=False).check(candidate, Guard())
    assert "exact outputs differ" in (fidelity.failure(Guard()) or "")


def _write_lock(folder: Path, name: str, state: dict) -> Path:
    file = folder / "pipeline.py"
    file.write_text("# the pipeline file the lock is for\n")
    entries = (LockEntry(name, {}, state),)
    write_lock(
        folder,
        Lock(
            pipeline_file=file.name,
            pipeline_sha256=file_sha256(file),
            entries=entries,
            artifacts=artifact_digests(folder, entries),
        ),
    )
    return file


def test_the_lock_reapplies_it_and_refuses_a_changed_file(gpt2, gpt2_fp32, tmp_path):
    applied, folder = gpt2_fp32
    file = _write_lock(folder, "onnx.generate", applied.state)
    restored = apply_lock(gpt2, folder, file)
    assert isinstance(restored.model, OrtGenerator) and restored.model is not applied.pipeline.model
    assert torch.equal(_eager(restored), _eager(gpt2))
    copied = tmp_path / "lock"
    shutil.copytree(folder, copied)
    onnx_file = copied / applied.state["onnx_file"]
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")
    with pytest.raises(LockError, match="changed since"):
        apply_lock(gpt2, copied, copied / file.name)


def test_a_lock_whose_cache_layout_is_not_a_layout_is_refused_in_one_line(gpt2, gpt2_fp32, tmp_path):
    applied, folder = gpt2_fp32
    copied = tmp_path / "lock"
    shutil.copytree(folder, copied)
    file = _write_lock(copied, "onnx.generate", {**applied.state, "cache_layout": {"layers": "four"}})
    with pytest.raises(LockError, match="does not build"):
        apply_lock(gpt2, copied, file)


def _generating(model: torch.nn.Module, prompt: torch.Tensor, **settings) -> accel.Pipeline:
    def generate(model, ids):
        return model.generate(ids, max_new_tokens=4, pad_token_id=0, **settings)

    return accel.Pipeline(model=model, inputs=(prompt,), generate=generate)


def _hand_written(model, ids):
    for _ in range(3):
        ids = torch.cat([ids, model(ids).logits[:, -1:].argmax(-1)], dim=-1)
    return ids


def test_what_it_does_not_loop_is_not_applicable_with_its_reason_before_any_export(gpt2, tmp_path):
    prompt = gpt2.example_batch()[0]
    t5 = accel.load(REAL / "t5_generate_no_cache.py")
    cases = {
        "beam search (num_beams=2)": _generating(gpt2.model, prompt, num_beams=2),
        "sampling (do_sample=True)": _generating(gpt2.model, prompt, do_sample=True),
        "repetition_penalty=1.3": _generating(gpt2.model, prompt, repetition_penalty=1.3),
        "user code inside the loop": _generating(gpt2.model, prompt, logits_processor=[lambda ids, s: s]),
        "encoder-decoder": t5,
        "calls the model's forward itself": gpt2.replace(generate=_hand_written),
        "no generate loop": accel.Pipeline(model=gpt2.model, inputs=(prompt,)),
    }
    calls = []  # the transformer body: the probe's copy shares the model's own hooks, and stops before its body
    hook = gpt2.model.transformer.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        for reason, pipeline in cases.items():
            for name in ("onnx.generate", "onnx.generate_int8", "onnx.generate_weight_only"):
                assert reason in (OPTIMIZERS.get(name).applicable(pipeline, _context(tmp_path)) or ""), name
    finally:
        hook.remove()
    assert calls == []  # the probe stopped every loop before a forward
    assert not list(tmp_path.iterdir())  # nothing exported


def test_a_call_it_cannot_loop_is_one_clear_error(gpt2_fp32, gpt2):
    model = gpt2_fp32[0].pipeline.model
    with pytest.raises(AccelError, match=r"beam search \(num_beams=3\)"):
        model.generate(gpt2.example_batch()[0], num_beams=3, max_new_tokens=2)
    with pytest.raises(TypeError, match="runs generate\\(\\) only"):
        model(gpt2.example_batch()[0])


@pytest.mark.parametrize("params, match", [({"threads": -1}, "threads must be >= 0"), ({"opset": 11}, "opset must")])
def test_bad_parameters_are_recipe_errors(params, match):
    with pytest.raises(RecipeError, match=match):
        make_config(OPTIMIZERS.get("onnx.generate_int8"), params)


@pytest.mark.slow
def test_optimize_keeps_the_loop_in_onnx_runtime_and_the_lock_reapplies_it(tmp_path):
    file = tmp_path / "small_llama_generate.py"
    file.write_text(SMALL_LLAMA)
    recipe = parse_recipe({"name": "gen", "target": "latency", "rules": [{"name": "g", "try": ["onnx.generate"]}]})
    with thread_count(1):  # a busy machine stalls a second OpenMP thread of eager torch for seconds a call
        result = optimize(file, recipe, out_dir=tmp_path / "out", budget_seconds=90)
    (step,) = result.steps
    # kept or not is the machine's call (eager's per-step overhead against ORT's); the guard must pass
    assert step.verdict != SKIPPED and "exact outputs differ" not in (step.reason or ""), step.reason
    if step.verdict != ACCEPTED:
        return
    lock = read_lock(result.lock_path)
    (onnx_name,) = [name for name in lock.artifacts if name.endswith(".onnx")]
    assert lock.artifacts[onnx_name] == file_sha256(result.lock_path.parent / onnx_name)
    locked = accel.load(file, lock=result.lock_path)
    assert isinstance(locked.model, OrtGenerator)
    assert torch.equal(_eager(locked), _eager(accel.load(file)))
