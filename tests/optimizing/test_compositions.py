"""Compositions the engine searches: the second optimization tried on top of the first, the composed
pipeline within the guard, and the lock re-applying both in order.

Bucketing under OpenVINO and under fused ORT int8 on a padded stream (transformers BERT), trimming
padding under both runtimes on samples padded to max_length, the KV cache under int8 weights on a
GPT-2 generate loop, and the KV cache where it cannot compose (onnx.generate's loop in ONNX Runtime
already passes its cache). The end-to-end tests run `accel optimize` through the console script with
a recipe whose keep test takes whatever passed the guard (min_speedup 0.01): they test composing,
never which optimization is faster on this machine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import yaml

import accel
from accel.core.kv_cache import is_cached
from accel.core.machine import describe_machine
from accel.optimizing.lock import read_lock
from accel.optimizing.optimizers import OPTIMIZERS, Context, make_config, slot_of
from accel.optimizing.optimizers.batch import BucketPlan
from accel.optimizing.optimizers.kv_cache import RUNS_OUTSIDE_TORCH
from accel.optimizing.optimizers.trim_padding import TrimmedCollate
from accel.optimizing.recipes.schema import Candidate, Guard
from accel.optimizing.search.composer import IN_THE_COMPOSITION, Chosen, Composer
from accel.optimizing.search.fidelity import compare_samples

pytest.importorskip("onnxruntime")

TESTS = Path(__file__).resolve().parents[1]
REAL = TESTS / "real"
ACCEL = Path(sys.executable).with_name("accel")
# The int8 guard (the built-in recipes' for int8 rules): fp32 runtimes stay far above it.
INT8_GUARD = Guard(min_cosine=0.995, max_relative_error=0.1)

# The padded stream, shortened: 32 samples (4 of 200-256 tokens) in batches of 8.
BERT_SHORT = """
from bert_padded import make_sequences, pipeline as padded

pipeline = padded().replace(source=make_sequences(32), batch_size=8, name="bert_padded_short")
"""
# GPT-2 generating 16 tokens with the cache off (the corpus's loop generates 48).
GPT2_SHORT = """
from gpt2_lm import build_model, prompt

import accel


def generate_without_cache(model, ids):
    return model.generate(ids, max_new_tokens=16, do_sample=False, use_cache=False, pad_token_id=0)


pipeline = accel.Pipeline(model=build_model(), inputs=(prompt(),), generate=generate_without_cache, name="gpt2_short")
"""


def _pipeline_file(folder: Path, text: str, helper: str) -> Path:
    shutil.copy(REAL / helper, folder / helper)
    file = folder / "pipeline.py"
    file.write_text(text)
    return file


def _optimize(folder: Path, file: Path, optimizers: list[str], target: str, budget: int) -> dict:
    """`accel optimize` through the console script with a recipe that lists `optimizers` in order."""
    recipe = {
        "name": "composition",
        "target": target,
        "keep": {"min_speedup": 0.01},  # whatever passed the guard is kept: composing is under test
        "guard": {"min_cosine": INT8_GUARD.min_cosine, "max_relative_error": INT8_GUARD.max_relative_error},
        "order": "as_written",
        "rules": [{"name": "both", "try": optimizers}],
    }
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    command = [str(ACCEL), "optimize", str(file), "--recipe", str(folder / "recipe.yaml")]
    command += ["--only", ",".join(optimizers), "--threads", "1", "--budget", str(budget)]
    command += ["--out", str(folder / "out"), "--json", str(folder / "result.json")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=folder)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((folder / "result.json").read_text())


def _assert_composed(result: dict, first: str, second: str) -> None:
    steps = {step["optimizer"]: step for step in result["steps"]}
    assert steps[first]["verdict"] == "accepted", steps[first]["reason"]
    assert steps[second]["verdict"] == "accepted", steps[second]["reason"]
    assert steps[second]["composed_with"] == [first]  # tried on top of the first, not instead of it
    assert result["kept"] == [first, second]


def _assert_outputs_within_the_guard(original: accel.Pipeline, optimized: accel.Pipeline) -> None:
    pairs = [(f"sample {i}", a, b) for i, (a, b) in enumerate(zip(original.run(), optimized.run(), strict=True))]
    assert compare_samples(pairs).failure(INT8_GUARD) is None


@pytest.mark.slow
@pytest.mark.parametrize(
    "runtime, module",
    [
        ("openvino.runtime", "accel.optimizing.optimizers._openvino_io:OvModel"),
        ("onnx.fusions_int8", "accel.optimizing.optimizers.onnx_runtime:OrtModel"),
    ],
)
def test_bucketing_under_a_graph_runtime_on_a_padded_stream(tmp_path, runtime, module):
    if runtime.startswith("openvino"):
        pytest.importorskip("openvino")
    file = _pipeline_file(tmp_path, BERT_SHORT, "bert_padded.py")
    result = _optimize(tmp_path, file, [runtime, "batch.bucket"], "throughput", budget=45)
    _assert_composed(result, runtime, "batch.bucket")
    if runtime == "onnx.fusions_int8":  # fused ORT plus int8: the quantizer took the fused attention
        notes = result["steps"][0]["notes"]
        assert notes["fused_nodes"]["Attention"] > 0 and notes["quantized_nodes"]["QAttention"] > 0
    assert [entry.optimizer for entry in read_lock(tmp_path / "out").entries] == [runtime, "batch.bucket"]
    locked = accel.load(file, lock=tmp_path / "out")
    path, name = module.split(":")
    assert type(locked.model).__name__ == name and type(locked.model).__module__ == path
    assert isinstance(locked.batch_plan, BucketPlan)
    _assert_outputs_within_the_guard(accel.load(file), locked)


@pytest.mark.slow
def test_the_kv_cache_under_int8_weights_on_a_generate_loop(tmp_path):
    file = _pipeline_file(tmp_path, GPT2_SHORT, "gpt2_lm.py")
    result = _optimize(tmp_path, file, ["quantize.int8_dynamic", "generation.kv_cache"], "latency", budget=90)
    _assert_composed(result, "quantize.int8_dynamic", "generation.kv_cache")
    entries = read_lock(tmp_path / "out").entries
    assert [entry.optimizer for entry in entries] == ["quantize.int8_dynamic", "generation.kv_cache"]
    locked = accel.load(file, lock=tmp_path / "out")
    assert is_cached(locked.model)
    assert isinstance(locked.model.transformer.h[0].attn.c_attn, torch.ao.nn.quantized.dynamic.Linear)
    original = accel.load(file)
    assert torch.equal(locked.run()[0], original.run()[0])  # the same tokens out


@pytest.mark.slow
def test_the_step_says_why_the_kv_cache_is_not_tried_once_a_loop_in_onnx_runtime_is_kept(tmp_path):
    """onnx.generate extends generation.kv_cache (its loop keeps the cache): tried first, and once
    kept the KV cache's step says so, without a trial. Composer.why_not, which would refuse the
    cache on top of the loop (RUNS_OUTSIDE_TORCH), is proven below on the composer itself."""
    file = _pipeline_file(tmp_path, GPT2_SHORT, "gpt2_lm.py")
    result = _optimize(tmp_path, file, ["onnx.generate", "generation.kv_cache"], "latency", budget=40)
    steps = {step["optimizer"]: step for step in result["steps"]}
    assert [step["optimizer"] for step in result["steps"]][:2] == ["onnx.generate", "generation.kv_cache"]
    assert steps["onnx.generate"]["verdict"] == "accepted", steps["onnx.generate"]["reason"]
    assert steps["generation.kv_cache"]["verdict"] == "skipped"
    assert "onnx.generate (kept) already does what it does" in steps["generation.kv_cache"]["reason"]
    assert [entry.optimizer for entry in read_lock(tmp_path / "out").entries] == ["onnx.generate"]


def _context(workdir: Path) -> Context:
    return Context(machine=describe_machine(), workdir=workdir)


def _chosen(*names: str) -> Chosen:
    chosen: Chosen = {}
    for name in names:
        optimizer = OPTIMIZERS.get(name)
        chosen[slot_of(optimizer)] = (optimizer, make_config(optimizer, {}), Candidate(name, {}))
    return chosen


def _load(helper: str, text: str) -> types.ModuleType:
    """A pipeline module from tests/real, imported beside its helper as accel's loader does."""
    sys.path.insert(0, str(REAL))
    try:
        module = types.ModuleType("composition_pipeline")
        exec(compile(text, "composition_pipeline", "exec"), module.__dict__)
    finally:
        sys.path.remove(str(REAL))
    return module


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["openvino.runtime", "onnx.fusions"])
def test_trimmed_padding_reaches_a_model_exported_at_the_full_length(tmp_path, runtime):
    if runtime.startswith("openvino"):
        pytest.importorskip("openvino")
    module = _load("bert_maxlen_tokenizer.py", "from bert_maxlen_tokenizer import pipeline\n")
    baseline = module.pipeline()
    pipeline, choices, _ = Composer(baseline, _context(tmp_path)).build(_chosen(runtime, "batch.trim_padding"))
    assert [c.optimizer for c in choices] == [runtime, "batch.trim_padding"]
    assert isinstance(pipeline.collate, TrimmedCollate) and not isinstance(pipeline.model, type(baseline.model))
    first = pipeline.collate_fn()([pipeline.prepare(s) for s in pipeline.source[:8]])
    assert first["input_ids"].shape[1] < baseline.example_batch()["input_ids"].shape[1]  # shorter than exported
    _assert_outputs_within_the_guard(baseline, pipeline)


@pytest.fixture(scope="module")
def gpt2_short() -> accel.Pipeline:
    return _load("gpt2_lm.py", GPT2_SHORT).pipeline


@pytest.mark.slow
def test_the_kv_cache_says_why_it_does_not_compose_with_a_loop_in_onnx_runtime(gpt2_short, tmp_path):
    kv_cache = OPTIMIZERS.get("generation.kv_cache")
    composer = Composer(gpt2_short, _context(tmp_path))
    assert composer.why_not(kv_cache, {}) is None  # the pipeline itself takes the cache
    reason = composer.why_not(kv_cache, _chosen("onnx.generate"))
    assert reason == f"{IN_THE_COMPOSITION} {RUNS_OUTSIDE_TORCH} once onnx.generate is applied"
    # Chosen first, the cache is left out when onnx.generate replaces the model, and says why.
    pipeline, choices, _ = composer.build(_chosen("generation.kv_cache", "onnx.generate"))
    assert [c.optimizer for c in choices] == ["onnx.generate"]
    assert composer.left_out(_chosen("generation.kv_cache", "onnx.generate")) == [
        f"generation.kv_cache ({RUNS_OUTSIDE_TORCH} once onnx.generate is applied)"
    ]
    assert torch.equal(pipeline.run()[0], gpt2_short.run()[0])


def test_a_reason_the_pipeline_itself_gives_is_not_blamed_on_the_composition(gpt2_short, tmp_path):
    bucket = OPTIMIZERS.get("batch.bucket")
    reason = Composer(gpt2_short, _context(tmp_path)).why_not(bucket, _chosen("quantize.int8_dynamic"))
    assert reason is not None and not reason.startswith(IN_THE_COMPOSITION)
