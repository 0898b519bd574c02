"""The model-replacing optimizers on real transformers models (tests/real/: random init, small
configs, no download), as their users call them.

What must hold on any CPU, whichever optimizer wins there: every ORT candidate exports a BERT
encoder called with keyword arguments on padded dict batches; the drop-in returns the original
output class with the same keys, takes other batch sizes and sequence lengths (a locked model too),
and is called positionally or by keyword like the original; the torch-side candidates (int8, bf16,
compile) keep the call and the output type; and each corpus model goes through `accel optimize`
and `accel bench` with no candidate failing.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import pytest
import torch

import accel
from accel.core.machine import describe_machine
from accel.gating.bench import BenchConfig, bench
from accel.optimizing.lock import LOCK_NAME, Lock, LockEntry, file_sha256, read_lock, write_lock
from accel.optimizing.optimizers import OPTIMIZERS, Context, make_config
from accel.optimizing.optimizers.onnx_runtime import OrtModel
from accel.optimizing.optimizers.precision import HalfPrecisionForward
from accel.optimizing.recipes import parse_recipe
from accel.optimizing.run import optimize
from accel.optimizing.search.engine import FAILED
from accel.optimizing.search.fidelity import compare_outputs

REAL = Path(__file__).parent / "real"
ORT_CANDIDATES = ("onnx.runtime", "onnx.int8_dynamic", "onnx.int8_static")
# int8 moves a random-init encoder's hidden states by a few percent; an exporter that fed an input
# to the wrong parameter (the use_cache failure) or mixed outputs up lands far below this.
INT8_MIN_COSINE = 0.95
FP32_TOLERANCE = 1e-4


def _corpus(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"real_{name}", REAL / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _context(tmp_path: Path) -> Context:
    return Context(machine=describe_machine(), workdir=tmp_path)


def _apply(name: str, pipeline: accel.Pipeline, tmp_path: Path, **params):
    optimizer = OPTIMIZERS.get(name)
    config = make_config(optimizer, params)
    return optimizer, config, optimizer.apply(pipeline, config, _context(tmp_path))


def _same_structure(reference, output) -> None:
    assert type(output) is type(reference)
    assert list(output.keys()) == list(reference.keys())
    for key in reference.keys():
        assert output[key].shape == reference[key].shape, key


@pytest.fixture(scope="module")
def bert():
    module = _corpus("bert_padded")
    return module, module.pipeline().replace(source=module.make_sequences(24), batch_size=8)


def _padded_batch(module: ModuleType, lengths: list[int]) -> dict[str, torch.Tensor]:
    return module.pad_collate([module.encode(list(range(1, n + 1))) for n in lengths])


@pytest.mark.slow
@pytest.mark.parametrize("name", ORT_CANDIDATES)
def test_ort_candidates_export_bert_with_its_keyword_call(bert, name, tmp_path):
    module, pipeline = bert
    optimizer, config, applied = _apply(name, pipeline, tmp_path)
    model = applied.pipeline.model
    assert optimizer.applicable(pipeline, _context(tmp_path)) is None
    assert isinstance(model, OrtModel) and list(model.parameters()) == []  # still an nn.Module to callers
    assert applied.state["exporter"] == "dynamo"
    assert applied.state["dynamic_axes"]["input_ids"] == [0, 1]
    minimum = 1 - FP32_TOLERANCE if name == "onnx.runtime" else INT8_MIN_COSINE
    # The example batch, and batches of other sizes and padded lengths than it was exported at.
    for lengths in (None, [50, 3, 17], [9] * 40):
        batch = pipeline.example_batch() if lengths is None else _padded_batch(module, lengths)
        with torch.inference_mode():
            reference, output = pipeline.model(**batch), model(**batch)
        _same_structure(reference, output)
        assert compare_outputs(reference, output).cosine >= minimum
    positional = model(batch["input_ids"], batch["attention_mask"])
    assert torch.equal(positional.last_hidden_state, output.last_hidden_state)
    with pytest.raises(TypeError, match="token_type_ids"):
        model(**batch, token_type_ids=torch.zeros_like(batch["input_ids"]))


def test_locked_onnx_classifier_takes_more_rows_than_it_was_optimized_on(tmp_path):
    """The minimal form (model + example_inputs at batch 64), restored from a lock, called with 512 rows."""
    file = tmp_path / "classifier.py"
    file.write_text(
        "import torch\n"
        "torch.manual_seed(0)\n"
        "model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)).eval()\n"
        "example_inputs = (torch.randn(64, 32),)\n"
    )
    pipeline = accel.load(file)
    optimizer, config, applied = _apply("onnx.runtime", pipeline, tmp_path / "work")
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(tmp_path / "work" / applied.state["onnx_file"], out / applied.state["onnx_file"])
    entry = LockEntry(optimizer.name, {}, applied.state)
    onnx_file = applied.state["onnx_file"]
    lock = Lock(
        pipeline_file=file.name,
        pipeline_sha256=file_sha256(file),
        entries=(entry,),
        artifacts={onnx_file: file_sha256(out / onnx_file)},  # a lock loads only the files it lists, hashed
    )
    write_lock(out / LOCK_NAME, lock)
    locked = accel.load(file, lock=out / LOCK_NAME)
    assert isinstance(locked.model, OrtModel)
    rows = torch.randn(512, 32)
    with torch.inference_mode():
        assert torch.allclose(locked.model(rows), pipeline.model(rows), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet_classifier", "vit_classifier"])
def test_image_classifiers_through_onnx_keep_their_output_class(name, tmp_path):
    pipeline = _corpus(name).pipeline()
    _, _, applied = _apply("onnx.runtime", pipeline, tmp_path)
    assert isinstance(applied.pipeline.model, OrtModel)
    example = pipeline.example_batch()
    for rows in (len(next(iter(example.values()))) if isinstance(example, dict) else len(example), 5):
        batch = {k: v[:rows] for k, v in example.items()} if isinstance(example, dict) else example[:rows]
        with torch.inference_mode():
            reference, output = pipeline.call_model(batch), applied.pipeline.call_model(batch)
        _same_structure(reference, output)
        assert torch.allclose(output.logits, reference.logits, atol=1e-4)


@pytest.mark.parametrize(
    ("name", "params", "changed"),
    [
        ("quantize.int8_dynamic", {}, lambda m: "DynamicQuantizedLinear" in str(m) or "quantized" in str(m).lower()),
        ("precision.bf16", {"mode": "cast"}, lambda m: isinstance(m.__dict__.get("forward"), HalfPrecisionForward)),
        ("precision.bf16", {"mode": "autocast"}, lambda m: isinstance(m.__dict__.get("forward"), HalfPrecisionForward)),
        ("compile", {"backend": "eager"}, lambda m: isinstance(m, torch._dynamo.eval_frame.OptimizedModule)),
    ],
)
def test_torch_side_candidates_keep_the_keyword_call_and_output_type(bert, name, params, changed, tmp_path):
    module, pipeline = bert
    _, _, applied = _apply(name, pipeline, tmp_path, **params)
    assert changed(applied.pipeline.model)
    for lengths in ([12, 30], [7, 7, 7, 2]):
        batch = _padded_batch(module, lengths)
        with torch.inference_mode():
            reference, output = pipeline.call_model(batch), applied.pipeline.call_model(batch)
        _same_structure(reference, output)
        assert output.last_hidden_state.dtype == torch.float32
        assert compare_outputs(reference, output).cosine >= INT8_MIN_COSINE


# Per corpus model: candidates of the recipe its finding calls for that the tests above do not
# already cover, so each optimizer meets each kind of model once without the suite growing long.
CORPUS_RECIPES = {
    "bert_padded": ["batch.bucket", "onnx.int8_dynamic"],
    "resnet_classifier": ["onnx.int8_dynamic", "quantize.int8_dynamic", "layout.channels_last"],
    "vit_classifier": ["onnx.int8_static", "precision.bf16"],
    # an encoder-decoder's generate loop: the cache (the generation finding's cure), then int8 on top
    # (decoder-only loops: tests/optimizing/optimizers/test_kv_cache.py)
    "t5_generate_no_cache": ["generation.kv_cache", "quantize.int8_dynamic"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CORPUS_RECIPES))
def test_corpus_model_through_optimize_and_bench(name, tmp_path):
    file = tmp_path / f"{name}.py"
    shutil.copy(REAL / f"{name}.py", file)
    recipe = parse_recipe(
        {
            "name": "corpus",
            "target": "throughput",
            "guard": {"min_cosine": 0.99},
            "rules": [{"name": "cure", "try": CORPUS_RECIPES[name]}],
        }
    )
    result = optimize(file, recipe, out_dir=tmp_path / "out", budget_seconds=40)
    # the engine orders them, and a quantization that fails the guard is followed by its safer variants
    assert {s.optimizer for s in result.steps} == set(CORPUS_RECIPES[name])
    for step in result.steps:
        assert step.verdict != FAILED, f"{step.optimizer}: {step.reason}"
        assert "structure" not in step.reason, f"{step.optimizer}: {step.reason}"
    baseline, locked = accel.load(file), accel.load(file, lock=result.lock_path)
    assert compare_outputs(baseline.run(), locked.run()).cosine >= 0.99
    measured = bench(file, result.lock_path, BenchConfig(replicates=1, min_calls=2, budget_seconds=0.2))
    assert measured.replicates[0].median_seconds > 0


@pytest.mark.slow
def test_a_lock_with_onnx_weights_stored_apart_loads_from_its_folder(tmp_path):
    """The dynamo exporter writes a transformers ResNet's weights to NAME.onnx.data beside the
    graph: the lock's folder must hold (and the lock digest) that file too."""
    file = tmp_path / "resnet_classifier.py"
    shutil.copy(REAL / "resnet_classifier.py", file)
    recipe = parse_recipe(
        {
            "name": "ort",
            "target": "latency",
            "keep": {"min_speedup": 0.01},
            "rules": [{"name": "ort", "try": ["onnx.runtime"]}],
        }
    )
    result = optimize(file, recipe, out_dir=tmp_path / "out", budget_seconds=30)
    assert [s.verdict for s in result.steps] == ["accepted"], result.steps[0].reason
    lock = read_lock(result.lock_path)
    assert any(name.endswith(".onnx.data") for name in lock.artifacts), lock.artifacts
    locked = accel.load(file, lock=result.lock_path)
    assert isinstance(locked.model, OrtModel)
    plain = accel.load(file)
    assert compare_outputs(plain.forward(plain.example_batch()), locked.forward(plain.example_batch())).cosine > 0.999
