"""generation.kv_cache and the model-replacing optimizers on generate loops (transformers models at
random init from small configs, tests/real/; no download).

What must hold on any CPU: the cached loop feeds one new token per step where the loop as written
fed the whole sequence, and decodes the same tokens; the baseline's model is left as it was; a model
without a cache, a pipeline without a loop and a loop that never calls model.generate() are told
apart with their reasons; bf16 and compile keep generate() running through the changed forward, so
the cache composes with them; and the lock re-applies the cache.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import accel
from accel.core.kv_cache import accepts_cache, is_cached
from accel.core.machine import describe_machine
from accel.optimizing.optimizers import OPTIMIZERS, Context, make_config
from accel.optimizing.optimizers.kv_cache import NotThroughGenerate
from accel.optimizing.recipes import parse_recipe
from accel.optimizing.run import optimize
from accel.optimizing.search.engine import ACCEPTED
from tests.paths import EXAMPLES, REAL

PROMPT, NEW = 32, 48  # tests/real/gpt2_lm.py


@pytest.fixture(scope="module")
def gpt2():
    return accel.load(REAL / "gpt2_generate_no_cache.py")


def _context(tmp_path: Path) -> Context:
    return Context(machine=describe_machine(), workdir=tmp_path)


def _apply(name: str, pipeline: accel.Pipeline, tmp_path: Path, **params) -> accel.Pipeline:
    optimizer = OPTIMIZERS.get(name)
    return optimizer.apply(pipeline, make_config(optimizer, params), _context(tmp_path)).pipeline


def _tokens_fed(pipeline: accel.Pipeline, hooked: torch.nn.Module) -> tuple[list[int], torch.Tensor]:
    """Tokens fed to each model call of one loop, and the loop's output."""
    fed: list[int] = []

    def count(_module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        fed.append(int(ids.shape[-1]))

    handle = hooked.register_forward_pre_hook(count, with_kwargs=True)
    try:
        with torch.inference_mode():
            output = pipeline.forward(pipeline.example_batch())
    finally:
        handle.remove()
    return fed, output


def test_cached_loop_feeds_one_token_per_step_and_decodes_the_same_tokens(gpt2, tmp_path):
    cached = _apply("generation.kv_cache", gpt2, tmp_path)
    plain_fed, plain_out = _tokens_fed(gpt2, gpt2.model)
    # the copy shares the model's parameters and hooks: the same hook sees its calls
    cached_fed, cached_out = _tokens_fed(cached, gpt2.model)
    assert plain_fed == list(range(PROMPT, PROMPT + NEW))  # the whole sequence, every step
    assert cached_fed == [PROMPT] + [1] * (NEW - 1)  # the prompt, then one new token per step
    assert torch.equal(plain_out, cached_out)
    assert isinstance(cached.model, type(gpt2.model)) and cached.model is not gpt2.model
    assert not is_cached(gpt2.model)  # the baseline's model is left as it was
    assert all(a is b for a, b in zip(cached.model.parameters(), gpt2.model.parameters()))  # no second copy


def test_not_applicable_without_a_loop_or_a_cache(gpt2, tmp_path):
    optimizer = OPTIMIZERS.get("generation.kv_cache")
    context = _context(tmp_path)
    hand_loop = accel.load(EXAMPLES / "decoder_lm.py")  # its own model class, no use_cache
    assert "use_cache" in optimizer.applicable(hand_loop, context)
    assert "no generate loop" in optimizer.applicable(accel.load(EXAMPLES / "wide_mlp.py"), context)
    already = _apply("generation.kv_cache", gpt2, tmp_path)
    assert "already" in optimizer.applicable(already, context)


def test_a_loop_that_never_calls_generate_is_refused_with_the_fix(gpt2, tmp_path):
    def greedy(model, ids):  # a hand-written loop over a transformers model: model.generate is never called
        for _ in range(3):
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1:].argmax(-1)], dim=1)
        return ids

    pipeline = gpt2.replace(generate=greedy)
    with pytest.raises(NotThroughGenerate, match="use_cache=True"):
        _apply("generation.kv_cache", pipeline, tmp_path)


@pytest.mark.parametrize("params", [{"mode": "cast"}, {"mode": "autocast"}])
def test_bf16_keeps_generate_and_composes_with_the_cache(gpt2, params, tmp_path):
    half = _apply("precision.bf16", gpt2, tmp_path, **params)
    assert type(half.model) is type(gpt2.model)  # generate() is still there
    assert accepts_cache(half.model)  # the forward's signature shows through the wrapper
    both = _apply("generation.kv_cache", half, tmp_path)
    dtypes: list[torch.dtype] = []
    lm_head = both.model.lm_head
    handle = lm_head.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    try:
        fed, out = _tokens_fed(both, half.model)
    finally:
        handle.remove()
    assert fed == [PROMPT] + [1] * (NEW - 1)
    assert dtypes and all(d == torch.bfloat16 for d in dtypes)  # the loop ran in bf16
    assert out.shape == (1, PROMPT + NEW) and out.dtype == torch.long
    if params["mode"] == "cast":
        assert all(p.dtype == torch.float32 for p in gpt2.model.parameters())  # the input was not mutated


def test_compile_on_a_generate_loop_compiles_the_forward_generate_calls(gpt2, tmp_path):
    from torch._dynamo.utils import counters

    before = sum(counters["frames"].values())
    compiled = _apply("compile", gpt2, tmp_path, backend="eager")  # warms up over the loop: compiles
    assert type(compiled.model) is type(gpt2.model)
    with torch.inference_mode():
        out = compiled.forward(compiled.example_batch())
    assert sum(counters["frames"].values()) > before  # dynamo saw the loop's forward calls
    assert out.shape == (1, PROMPT + NEW)


def test_compile_warms_up_an_encoder_decoder_through_its_loop(tmp_path):
    # T5's model cannot be called on the source alone (its decoder needs decoder_input_ids): compile
    # used to fail here ("You must specify exactly one of input_ids or inputs_embeds")
    t5 = accel.load(REAL / "t5_generate_no_cache.py")
    compiled = _apply("compile", t5, tmp_path, backend="eager")
    with torch.inference_mode():
        assert torch.equal(compiled.forward(t5.example_batch()), t5.forward(t5.example_batch()))


def test_compile_after_the_cache_still_runs_the_cached_loop_through_the_compiled_forward(gpt2, tmp_path):
    from torch._dynamo.utils import counters

    cached = _apply("generation.kv_cache", gpt2, tmp_path)
    before = sum(counters["frames"].values())
    both = _apply("compile", cached, tmp_path, backend="eager")
    assert is_cached(both.model)  # the copy compile made kept the cached generate()
    assert sum(counters["frames"].values()) > before  # its warm-up loop ran the compiled forward
    fed, _ = _tokens_fed(both, gpt2.model)
    assert fed == [PROMPT] + [1] * (NEW - 1)


@pytest.mark.slow
def test_optimize_keeps_the_cache_on_a_llama_and_the_lock_reapplies_it(tmp_path):
    file = tmp_path / "llama_generate_no_cache.py"
    shutil.copy(REAL / file.name, file)
    recipe = parse_recipe(
        {"name": "cache", "target": "latency", "rules": [{"name": "c", "try": ["generation.kv_cache"]}]}
    )
    result = optimize(file, recipe, out_dir=tmp_path / "out", budget_seconds=90)
    (step,) = result.steps
    # every step fed the whole sequence against one token per step: a large effect, a generous bound
    assert step.verdict == ACCEPTED, step.reason
    assert result.speedup > 1.5
    locked = accel.load(file, lock=result.lock_path)
    assert is_cached(locked.model)
    with torch.inference_mode():
        assert torch.equal(locked.forward(locked.example_batch()), accel.load(file).forward(locked.example_batch()))
    # (accel bench on a generate loop's lock: the T5 corpus test in tests/test_real_models_optimize.py)
