"""The OpenVINO optimizers: the model converted and run by OpenVINO's CPU plugin (float32, NNCF
int8), a drop-in for the original (keyword calls, ModelOutput, other batch sizes and lengths), and
re-applied from the IR its lock lists."""

from __future__ import annotations

import math
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

import accel
from accel.core.errors import LockError
from accel.core.machine import describe_machine
from accel.optimizing.lock import Lock, LockEntry, artifact_digests, file_sha256, read_lock, weights_sha256, write_lock
from accel.optimizing.optimizers import OPTIMIZERS, Context, make_config
from accel.optimizing.recipes import parse_recipe
from accel.optimizing.run import optimize
from accel.optimizing.runtimes import current_versions
from accel.optimizing.search.fidelity import compare_outputs

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from accel.optimizing.optimizers._openvino_io import OvModel  # noqa: E402

TESTS = Path(__file__).resolve().parents[2]
PLANTED = TESTS / "planted"
BERT_FILE = TESTS / "real" / "bert_padded.py"
OV_RECIPE = {
    "name": "openvino",
    "target": "latency",
    "guard": {"min_cosine": 0.9999},
    "rules": [{"name": "openvino", "try": ["openvino.runtime"]}],
}


def _context(workdir: Path, machine=None) -> Context:
    return Context(machine=machine or describe_machine(), workdir=workdir)


def _apply(name: str, pipeline: accel.Pipeline, workdir: Path, **params):
    optimizer = OPTIMIZERS.get(name)
    context = _context(workdir)
    assert optimizer.applicable(pipeline, context) is None
    return optimizer.apply(pipeline, make_config(optimizer, params), context)


def _wide_mlp() -> accel.Pipeline:
    namespace: dict = {}
    exec((PLANTED / "opt_wide_mlp.py").read_text(), namespace)
    return accel.Pipeline(model=namespace["model"], inputs=namespace["example_inputs"], name="opt_wide_mlp")


def _bert_module() -> types.ModuleType:
    module = types.ModuleType("bert_padded_for_openvino")
    exec(compile(BERT_FILE.read_text(), str(BERT_FILE), "exec"), module.__dict__)
    return module


def _padded_batch(bert: types.ModuleType, lengths: list[int], seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    samples = [
        bert.encode(torch.randint(1, bert.CONFIG.vocab_size, (n,), generator=generator).tolist()) for n in lengths
    ]
    return bert.pad_collate(samples)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    """The planted wide MLP (batch 1), converted once in float32 and once in NNCF int8."""
    workdir = tmp_path_factory.mktemp("ov-mlp")
    pipeline = _wide_mlp()
    return pipeline, _apply("openvino.runtime", pipeline, workdir), _apply("openvino.int8", pipeline, workdir)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """The corpus's padded BERT (keyword dict batches, a ModelOutput), converted in float32 and int8."""
    workdir = tmp_path_factory.mktemp("ov-bert")
    module = _bert_module()
    pipeline = module.pipeline()
    return module, pipeline, _apply("openvino.runtime", pipeline, workdir), _apply("openvino.int8", pipeline, workdir)


def test_the_wide_mlp_runs_in_openvino_at_other_batch_sizes(mlp):
    pipeline, applied, _ = mlp
    model = applied.pipeline.model
    assert isinstance(model, OvModel) and not isinstance(pipeline.model, OvModel)
    assert model.properties["INFERENCE_PRECISION_HINT"] == "f32"
    assert applied.state["dynamic_axes"] == {"input_0": [0]}
    for rows in (1, 3, 8):  # exported at batch 1
        x = torch.randn(rows, 1024)
        with torch.no_grad():
            expected = pipeline.model(x)
        assert torch.allclose(model(x), expected, atol=1e-4, rtol=1e-4)


def test_int8_quantizes_the_graph_and_stays_within_the_guard(mlp):
    pipeline, fp32, int8 = mlp
    import openvino as ov

    xml = Path(int8.notes["xml_file"])
    ops = {op.get_type_name() for op in ov.Core().read_model(str(xml)).get_ordered_ops()}
    assert "FakeQuantize" in ops
    assert {"i8", "u8"} & int8.pipeline.model.runtime_precisions()
    assert not {"i8", "u8"} & fp32.pipeline.model.runtime_precisions()
    assert int8.state["model_type"] == "default" and int8.state["calibration_batches"] == 1
    x = torch.randn(4, 1024)
    with torch.no_grad():
        expected = pipeline.model(x)
    got = int8.pipeline.model(x)
    assert not torch.allclose(got, fp32.pipeline.model(x), atol=1e-6)
    assert torch.nn.functional.cosine_similarity(got.flatten(), expected.flatten(), dim=0) > 0.99


def test_bert_keeps_keyword_calls_model_output_and_dynamic_lengths(bert):
    module, pipeline, applied, _ = bert
    model = applied.pipeline.model
    assert isinstance(model, OvModel)
    assert applied.state["input_names"] == ["input_ids", "attention_mask"]
    assert applied.state["dynamic_axes"] == {"input_ids": [0, 1], "attention_mask": [0, 1]}
    example = pipeline.example_batch()
    for lengths in ([9, 33, 70], [5], [120, 7]):  # other batch sizes and padded lengths than the example
        batch = _padded_batch(module, lengths, seed=len(lengths))
        assert batch["input_ids"].shape != example["input_ids"].shape
        with torch.no_grad():
            expected = pipeline.model(**batch)
        got = model(**batch)
        assert type(got) is type(expected) and list(got.keys()) == list(expected.keys())
        for key in expected.keys():
            assert torch.allclose(got[key], expected[key], atol=1e-4, rtol=1e-4), key
    got = model(batch["input_ids"], batch["attention_mask"])  # positionally, as BertModel takes them too
    assert torch.allclose(got.last_hidden_state, expected.last_hidden_state, atol=1e-4, rtol=1e-4)


def test_bert_int8_uses_the_transformer_scheme_and_agrees_within_the_guard(bert):
    module, pipeline, fp32, int8 = bert
    assert int8.state["model_type"] == "transformer" and int8.state["calibrated_on"] == "source"
    assert {"i8", "u8"} & int8.pipeline.model.runtime_precisions()
    batch = _padded_batch(module, [12, 40, 64, 30], seed=7)
    with torch.no_grad():
        expected = pipeline.model(**batch)
    got = int8.pipeline.model(**batch)
    assert not torch.allclose(got.last_hidden_state, fp32.pipeline.model(**batch).last_hidden_state, atol=1e-5)
    fidelity = compare_outputs(expected, got)
    assert fidelity.cosine > 0.99


# Operations that pass a value on unchanged in kind: a FakeQuantize behind them still feeds the MatMul.
_PASS_THROUGH = {"Reshape", "Transpose", "Convert", "Multiply", "Subtract", "Squeeze", "Unsqueeze"}


def _fed_by_fake_quantize(node, depth: int = 3) -> bool:
    for value in node.input_values():
        source = value.get_node()
        if source.get_type_name() == "FakeQuantize":
            return True
        if depth and source.get_type_name() in _PASS_THROUGH and _fed_by_fake_quantize(source, depth - 1):
            return True
    return False


def _quantized_matmuls(xml: Path) -> dict[str, bool]:
    """Each MatMul of an IR by name: whether a FakeQuantize feeds it (its int8 inputs)."""
    import openvino as ov

    ops = ov.Core().read_model(str(xml)).get_ordered_ops()
    return {op.get_friendly_name(): _fed_by_fake_quantize(op) for op in ops if op.get_type_name() == "MatMul"}


def test_the_safer_int8_variants_turn_smooth_quant_off_then_leave_the_worst_layers_in_float(bert, tmp_path):
    import openvino as ov

    _, pipeline, _, int8 = bert
    optimizer = OPTIMIZERS.get("openvino.int8")
    variants = optimizer.safer_variants(make_config(optimizer, {}), describe_machine())
    assert [(v.smooth_quant, v.fast_bias_correction, v.keep_float) for v in variants] == [
        (False, False, 0.0),
        (False, False, 0.1),
        (False, False, 0.25),
    ]
    assert optimizer.safer_variants(variants[-1], describe_machine()) == []
    default_ops = [op.get_friendly_name() for op in ov.Core().read_model(int8.notes["xml_file"]).get_ordered_ops()]
    assert any("smooth_quant" in name for name in default_ops)  # NNCF's transformer scheme scales by default

    safer = _apply("openvino.int8", pipeline, tmp_path, smooth_quant=False, fast_bias_correction=False, keep_float=0.25)
    xml = Path(safer.notes["xml_file"])
    assert not any("smooth_quant" in op.get_friendly_name() for op in ov.Core().read_model(str(xml)).get_ordered_ops())
    float_layers = safer.state["float_layers"]
    linears = [n for n, m in pipeline.model.named_modules() if isinstance(m, nn.Linear)]
    assert set(float_layers) <= set(linears) and len(float_layers) == math.ceil(0.25 * len(linears))
    careful = _apply("openvino.int8", pipeline, tmp_path, smooth_quant=False, fast_bias_correction=False)
    quantized, before = _quantized_matmuls(xml), _quantized_matmuls(Path(careful.notes["xml_file"]))
    for name in float_layers:  # int8 in the careful variant, float here
        node = next(n for n in quantized if n.startswith(f"__module.model.{name}/"))
        assert before[node] and not quantized[node], name
    assert sum(quantized.values()) == sum(before.values()) - len(float_layers)
    batch = _padded_batch(_bert_module(), [12, 40], seed=3)
    with torch.no_grad():
        expected = pipeline.model(**batch)
    assert compare_outputs(expected, safer.pipeline.model(**batch)).cosine > 0.99


def _bert_lock(bert, tmp_path) -> tuple[Path, Path]:
    """A pipeline file and the lock of its openvino.runtime entry, as optimize writes them."""
    _, _, applied, _ = bert
    file = tmp_path / "bert_padded.py"
    shutil.copy(BERT_FILE, file)
    out = tmp_path / "out"
    out.mkdir()
    for key in ("xml_file", "bin_file"):
        shutil.copy(Path(applied.notes["xml_file"]).with_name(applied.state[key]), out)
    entries = (LockEntry("openvino.runtime", {}, applied.state),)
    lock = Lock(
        pipeline_file=file.name,
        pipeline_sha256=file_sha256(file),
        entries=entries,
        weights_sha256=weights_sha256(accel.load(file)),
        artifacts=artifact_digests(out, entries),
        versions=current_versions(entries),
    )
    write_lock(out, lock)
    return file, out


def test_the_lock_reapplies_the_ir_from_its_folder(bert, tmp_path):
    module, pipeline, applied, _ = bert
    file, out = _bert_lock(bert, tmp_path)
    lock = read_lock(out)
    assert set(lock.artifacts) == {applied.state["xml_file"], applied.state["bin_file"]}
    assert "openvino" in lock.versions
    loaded = accel.load(file, lock=out)
    assert isinstance(loaded.model, OvModel) and loaded.model.xml_path.parent == out
    batch = _padded_batch(module, [17, 50], seed=3)
    expected, got = applied.pipeline.model(**batch), loaded.model(**batch)
    assert type(got) is type(expected)
    assert torch.equal(got.last_hidden_state, expected.last_hidden_state)


@pytest.mark.parametrize("key", ["xml_file", "bin_file"])
def test_a_tampered_ir_file_is_refused(bert, tmp_path, key):
    file, out = _bert_lock(bert, tmp_path)
    target = out / read_lock(out).entries[0].state[key]
    target.write_bytes(target.read_bytes() + b"\0")
    with pytest.raises(LockError, match=f"{target.name} changed since"):
        accel.load(file, lock=out)


def test_a_lock_naming_a_file_outside_its_folder_is_refused(mlp, tmp_path):
    _, applied, _ = mlp
    state = {**applied.state, "xml_file": "../elsewhere.xml"}
    optimizer = OPTIMIZERS.get("openvino.runtime")
    with pytest.raises(LockError, match="inside its own folder"):
        optimizer.restore(_wide_mlp(), make_config(optimizer, {}), state, tmp_path)


def test_bad_compile_properties_in_a_lock_are_refused(mlp):
    _, applied, _ = mlp
    folder = Path(applied.notes["xml_file"]).parent
    state = {**applied.state, "compile_properties": {**applied.state["compile_properties"], "CACHE_DIR": "/tmp"}}
    optimizer = OPTIMIZERS.get("openvino.runtime")
    with pytest.raises(LockError, match="does not build an OpenVINO model"):
        optimizer.restore(_wide_mlp(), make_config(optimizer, {}), state, folder)


@pytest.mark.parametrize("name, module", [("openvino.runtime", "openvino"), ("openvino.int8", "nncf")])
def test_without_the_extra_it_is_not_applicable_with_the_pip_line(monkeypatch, tmp_path, name, module):
    monkeypatch.setitem(sys.modules, module, None)  # import openvino / nncf now fails
    reason = OPTIMIZERS.get(name).applicable(_wide_mlp(), _context(tmp_path))
    assert reason == f"{module} is not installed: pip install 'accel[openvino]'"


def test_bf16_applies_only_where_the_calibration_measured_a_fast_unit(tmp_path):
    optimizer = OPTIMIZERS.get("openvino.bf16")
    pipeline = _wide_mlp()
    for speedup, applies in ((None, False), ((1.05, "k"), False), ((2.5, "k"), True)):
        machine = types.SimpleNamespace(is_cuda=False, cure_speedup=lambda dtype, s=speedup: s)
        reason = optimizer.applicable(pipeline, _context(tmp_path, machine))
        assert (reason is None) == applies, reason


def test_a_model_that_is_not_a_module_or_already_openvino_is_not_applicable(mlp, tmp_path):
    _, applied, _ = mlp
    optimizer = OPTIMIZERS.get("openvino.runtime")
    assert "already runs in OpenVINO" in optimizer.applicable(applied.pipeline, _context(tmp_path))
    plain = accel.Pipeline(model=lambda x: x * 2, inputs=(torch.randn(2, 3),))
    assert "not a torch.nn.Module" in optimizer.applicable(plain, _context(tmp_path))


def test_optimize_end_to_end_writes_a_lock_that_load_reapplies(tmp_path):
    file = tmp_path / "tiny_ops.py"
    shutil.copy(PLANTED / "hw_tiny_ops.py", file)
    result = optimize(file, parse_recipe(OV_RECIPE), out_dir=tmp_path / "out", budget_seconds=60)
    lock = read_lock(tmp_path / "out")
    assert [e.optimizer for e in lock.entries] == ["openvino.runtime"], result
    assert {Path(n).suffix for n in lock.artifacts} == {".xml", ".bin"}
    original, loaded = accel.load(file), accel.load(file, lock=tmp_path / "out")
    assert isinstance(loaded.model, OvModel) and isinstance(original.model, nn.Module)
    x = torch.randn(5, 16)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), original.model(x), atol=1e-5)
