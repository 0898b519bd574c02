"""openvino.generate and openvino.generate_int8 on generate loops (transformers GPT-2 and Llama at
random init from small configs, tests/real/; no download).

What must hold on any CPU: the loop runs over a step compiled by OpenVINO (the step runs once per
token, the eager forward never), in float32 its tokens are eager generate()'s; int8 compresses the
step's weights (the compiled layers read u8 weights) and the guard decides on the tokens; the lock
re-applies it in a fresh process and refuses a changed IR; what onnx.generate cannot loop, and a
machine without the extra, are not applicable with their reasons, before any export.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import accel
from accel.core.errors import AccelError, LockError, RecipeError
from accel.core.machine import describe_machine
from accel.optimizing.lock import Lock, LockEntry, apply_lock, artifact_digests, file_sha256, write_lock
from accel.optimizing.optimizers import OPTIMIZERS, Applied, Context, make_config
from accel.optimizing.recipes.schema import Guard
from accel.optimizing.search.validation import Validator
from tests.paths import REAL

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from accel.optimizing.optimizers.openvino_generate import OvGenerator  # noqa: E402

NEW = 48  # tests/real/gpt2_lm.py and llama_generate_no_cache.py generate 48 tokens
NAMES = ("openvino.generate", "openvino.generate_int8")


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
def gpt2_fp32(gpt2, tmp_path_factory) -> tuple[Applied, Path]:
    folder = tmp_path_factory.mktemp("gpt2-ov-generate")
    assert OPTIMIZERS.get("openvino.generate").applicable(gpt2, _context(folder)) is None
    return _apply("openvino.generate", gpt2, folder), folder


@pytest.mark.parametrize("which", ["gpt2", pytest.param("llama", marks=pytest.mark.slow)])
def test_the_loop_runs_in_openvino_and_decodes_the_same_tokens(which, gpt2, gpt2_fp32, tmp_path):
    pipeline = gpt2 if which == "gpt2" else accel.load(REAL / "llama_generate_no_cache.py")
    applied = gpt2_fp32[0] if which == "gpt2" else _apply("openvino.generate", pipeline, tmp_path)
    model = applied.pipeline.model
    assert isinstance(model, OvGenerator) and pipeline.model is not model
    assert type(model.step.compiled).__name__ == "CompiledModel"
    assert model.step.properties["INFERENCE_PRECISION_HINT"] == "f32"
    assert "FullyConnected" in model.step.runtime_op_types() and model.compressed_matmuls() == 0
    eager_calls, step_calls = [], []
    hooks = [
        pipeline.model.register_forward_pre_hook(lambda *_: eager_calls.append(1)),
        model.step.register_forward_pre_hook(lambda *_: step_calls.append(1)),
    ]
    try:
        got = _eager(applied.pipeline)
    finally:
        for hook in hooks:
            hook.remove()
    assert eager_calls == [] and len(step_calls) == NEW  # the prompt's step, then one per new token
    assert torch.equal(got, _eager(pipeline))
    assert applied.state["cache_layout"]["layers"] == 4
    assert not list(Path(applied.notes["xml_file"]).parent.glob("*.onnx"))  # the export is read, then removed


@pytest.mark.slow
def test_int8_compresses_the_step_and_the_guard_decides_on_the_tokens(gpt2, gpt2_fp32, tmp_path):
    applied = _apply("openvino.generate_int8", gpt2, tmp_path)
    model = applied.pipeline.model
    assert model.compressed_matmuls() >= 4 * 4  # each Conv1D of the 4 layers
    assert applied.state["compression_mode"] == "int8_asym"
    fp32_bytes = (gpt2_fp32[1] / gpt2_fp32[0].state["bin_file"]).stat().st_size
    assert (tmp_path / applied.state["bin_file"]).stat().st_size < 0.5 * fp32_bytes
    got = _eager(applied.pipeline)
    assert got.shape == (1, 32 + NEW)
    failure = Validator(gpt2, per_sample_results=False).check(applied.pipeline, Guard())
    assert (failure.failure(Guard()) is None) == torch.equal(got, _eager(gpt2))


def _write_lock(folder: Path, state: dict, *more: LockEntry) -> Path:
    file = folder / "pipeline.py"
    file.write_text("# the pipeline file the lock is for\n")
    entries = (LockEntry("openvino.generate", {}, state), *more)
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


FRESH = """
import sys, torch, accel
from pathlib import Path
from accel.optimizing.lock import apply_lock
pipeline = accel.load(Path(sys.argv[1]))
restored = apply_lock(pipeline, Path(sys.argv[2]), Path(sys.argv[3]))
with torch.inference_mode():
    same = torch.equal(restored.forward(pipeline.example_batch()), pipeline.forward(pipeline.example_batch()))
print(type(restored.model).__name__, restored.model.step.compiled.get_property("INFERENCE_NUM_THREADS"), same)
"""


def test_the_lock_reapplies_it_in_a_fresh_process_and_refuses_a_changed_ir(gpt2, gpt2_fp32, tmp_path):
    applied, folder = gpt2_fp32
    file = _write_lock(folder, applied.state)
    lock = (folder / "accel.lock.yaml").read_text()
    assert applied.state["xml_file"] in lock and applied.state["bin_file"] in lock  # listed with digests
    command = [sys.executable, "-c", FRESH, str(REAL / "gpt2_generate_cached.py"), str(folder), str(file)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.stdout.split()[-3::2] == ["OvGenerator", "True"], result.stderr[-2000:]
    copied = tmp_path / "lock"
    shutil.copytree(folder, copied)
    weights = copied / applied.state["bin_file"]
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(LockError, match="changed since"):
        apply_lock(gpt2, copied, copied / file.name)


def test_runtime_threads_in_the_lock_compiles_the_loops_step_again_at_fewer_threads(gpt2_fp32, tmp_path):
    # In a fresh process: OpenVINO models compiled at another thread count in this one, before the
    # fresh-process tests after it, crashed the test process natively (exit 139).
    applied, folder = gpt2_fp32
    copied = tmp_path / "lock"
    shutil.copytree(folder, copied)
    file = _write_lock(copied, applied.state, LockEntry("runtime.threads", {}, {"threads": 1, "threads_before": 2}))
    command = [sys.executable, "-c", FRESH, str(REAL / "gpt2_generate_cached.py"), str(copied), str(file)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.stdout.split()[-3:] == ["OvGenerator", "1", "True"], result.stderr[-2000:]


def test_a_lock_whose_ir_is_not_the_step_is_refused_in_one_line(gpt2, gpt2_fp32, tmp_path):
    applied, folder = gpt2_fp32
    copied = tmp_path / "lock"
    shutil.copytree(folder, copied)
    file = _write_lock(copied, {**applied.state, "cache_layout": {"layers": "four"}})
    with pytest.raises(LockError, match="does not build"):
        apply_lock(gpt2, copied, file)
    file = _write_lock(copied, {**applied.state, "cache_layout": {**applied.state["cache_layout"], "layers": 3}})
    with pytest.raises(LockError, match="graph has 9 outputs, the model's output 7"):
        apply_lock(gpt2, copied, file)


def _generating(model: torch.nn.Module, prompt: torch.Tensor, **settings) -> accel.Pipeline:
    def generate(model, ids):
        return model.generate(ids, max_new_tokens=4, pad_token_id=0, **settings)

    return accel.Pipeline(model=model, inputs=(prompt,), generate=generate)


def test_what_it_does_not_loop_is_not_applicable_with_its_reason_before_any_export(gpt2, gpt2_fp32, tmp_path):
    prompt = gpt2.example_batch()[0]
    cases = {
        "beam search (num_beams=2)": _generating(gpt2.model, prompt, num_beams=2),
        "sampling (do_sample=True)": _generating(gpt2.model, prompt, do_sample=True),
        "encoder-decoder": accel.load(REAL / "t5_generate_no_cache.py"),
        "no generate loop": accel.Pipeline(model=gpt2.model, inputs=(prompt,)),
        "already runs in a graph runtime": gpt2_fp32[0].pipeline,
    }
    for reason, pipeline in cases.items():
        for name in NAMES:
            assert reason in (OPTIMIZERS.get(name).applicable(pipeline, _context(tmp_path)) or ""), name
    assert not list(tmp_path.iterdir())  # nothing exported


@pytest.mark.parametrize("name, module", [(NAMES[0], "openvino"), (NAMES[1], "nncf")])
def test_without_the_extra_it_is_not_applicable_with_the_pip_line(monkeypatch, gpt2, tmp_path, name, module):
    monkeypatch.setitem(sys.modules, module, None)  # import openvino / nncf now fails
    reason = OPTIMIZERS.get(name).applicable(gpt2, _context(tmp_path))
    assert reason == f"{module} is not installed: pip install 'accel[openvino]'"


def test_a_call_it_cannot_loop_is_one_clear_error(gpt2_fp32, gpt2):
    model = gpt2_fp32[0].pipeline.model
    with pytest.raises(AccelError, match=r"beam search \(num_beams=3\)"):
        model.generate(gpt2.example_batch()[0], num_beams=3, max_new_tokens=2)
    with pytest.raises(TypeError, match="runs generate\\(\\) only"):
        model(gpt2.example_batch()[0])


@pytest.mark.parametrize(
    "params, match", [({"threads": -1}, "threads must be >= 0"), ({"mode": "int2"}, "mode must be one of")]
)
def test_bad_parameters_are_recipe_errors(params, match):
    with pytest.raises(RecipeError, match=match):
        make_config(OPTIMIZERS.get("openvino.generate_int8"), params)
