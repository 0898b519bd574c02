"""The lock file: written by optimize, re-applied by accel.load, refused when the file changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

import accel
from accel.core.errors import LockError
from accel.optimizing.lock import LOCK_SCHEMA, Lock, LockEntry, file_sha256, read_lock, write_lock
from accel.optimizing.optimizers.onnx_runtime import OrtModel
from accel.optimizing.recipes import parse_recipe
from accel.optimizing.run import optimize
from accel.optimizing.search.fidelity import compare_outputs
from tests.paths import PLANTED

INT8_RECIPE = {
    "name": "int8",
    "target": "latency",
    "guard": {"min_cosine": 0.995},
    "rules": [{"name": "int8", "try": ["onnx.int8_dynamic"]}],
}


# The planted wide MLP as a user's file often is: the weights come from a checkpoint beside it.
LOAD_CHECKPOINT = """
from pathlib import Path
model.load_state_dict(torch.load(Path(__file__).with_name("weights.pt")))
"""


@pytest.fixture(scope="module")
def optimized(tmp_path_factory):
    """The planted wide MLP, optimized once with ORT int8 (measured 3-4x here), its lock in out/."""
    folder = tmp_path_factory.mktemp("lock")
    namespace: dict = {}
    exec((PLANTED / "opt_wide_mlp.py").read_text(), namespace)
    torch.save(namespace["model"].state_dict(), folder / "weights.pt")
    file = folder / "wide_mlp.py"
    file.write_text((PLANTED / "opt_wide_mlp.py").read_text() + LOAD_CHECKPOINT)
    # 60 s: on AVX2 without VNNI the first two int8 rungs miss the guard and reduce_range passes
    result = optimize(file, parse_recipe(INT8_RECIPE), out_dir=folder / "out", budget_seconds=60)
    return file, folder / "out", result


def _copy(file: Path, out: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The pipeline folder and its lock folder copied, to change one thing in the copy."""
    for name in (file.name, "weights.pt"):
        shutil.copy(file.parent / name, tmp_path / name)
    shutil.copytree(out, tmp_path / "out")
    return tmp_path / file.name, tmp_path / "out"


def test_retrained_weights_are_refused_not_served_through_the_old_onnx_file(optimized, tmp_path):
    file, out = _copy(*optimized[:2], tmp_path)
    weights = torch.load(tmp_path / "weights.pt")
    weights["0.weight"] += 0.01  # retrained: the pipeline file itself did not change
    torch.save(weights, tmp_path / "weights.pt")
    with pytest.raises(LockError, match="the model.s weights changed since .* was built from the old weights"):
        accel.load(file, lock=out)
    assert isinstance(accel.load(file, lock=out, force=True).model, OrtModel)


def test_a_changed_artifact_is_refused(optimized, tmp_path):
    file, out = _copy(*optimized[:2], tmp_path)
    onnx_file = out / read_lock(out).entries[0].state["onnx_file"]
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")
    with pytest.raises(LockError, match=f"{onnx_file.name} changed since"):
        accel.load(file, lock=out)


def test_other_runtime_versions_are_refused_with_the_fix(optimized, tmp_path):
    file, out = _copy(*optimized[:2], tmp_path)
    data = yaml.safe_load((out / "accel.lock.yaml").read_text())
    data["versions"]["torch"] = "2.0.0"
    (out / "accel.lock.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(LockError) as info:
        accel.load(file, lock=out)
    assert f"other versions (torch 2.0.0 -> {torch.__version__})" in info.value.message
    assert "accel verify" in info.value.hint


def test_lock_round_trips_through_load(optimized):
    file, out, result = optimized
    assert [c.optimizer for c in result.result.choices] == ["onnx.int8_dynamic"], result.result.message
    lock = read_lock(out / "accel.lock.yaml")
    assert lock.schema == LOCK_SCHEMA and lock.pipeline_sha256 == file_sha256(file)
    assert lock.versions["torch"] == torch.__version__ and "onnxruntime" in lock.versions
    assert lock.weights_sha256 and lock.artifacts == {
        lock.entries[0].state["onnx_file"]: file_sha256(out / lock.entries[0].state["onnx_file"])
    }
    state = lock.entries[0].state
    assert (out / state["onnx_file"]).is_file()
    assert state["session_options"]["session.intra_op.allow_spinning"] == "0"
    baseline = accel.load(file)
    loaded = accel.load(file, lock=out / "accel.lock.yaml")
    assert isinstance(loaded.model, OrtModel)
    x = baseline.inputs[0]
    with torch.inference_mode():
        expected = baseline.model(x)
    got = loaded.model(x)  # drop-in: same call, torch tensor out
    assert isinstance(got, torch.Tensor) and got.shape == expected.shape
    assert compare_outputs(expected, got).cosine > 0.995


def test_lock_folder_works_as_the_lock_path(optimized):
    file, out, _ = optimized
    assert isinstance(accel.load(file, lock=out).model, OrtModel)


def test_changed_file_is_refused_unless_forced(optimized, tmp_path):
    changed, lock_copy = _copy(*optimized[:2], tmp_path)
    changed.write_text(changed.read_text() + "\n# edited\n")
    with pytest.raises(LockError, match="changed since"):
        accel.load(changed, lock=lock_copy / "accel.lock.yaml")
    assert isinstance(accel.load(changed, lock=lock_copy / "accel.lock.yaml", force=True).model, OrtModel)


def test_missing_artifact_is_a_lock_error(optimized, tmp_path):
    file, out, _ = optimized
    lock_copy = tmp_path / "out"
    lock_copy.mkdir()
    shutil.copy(out / "accel.lock.yaml", lock_copy)
    with pytest.raises(LockError, match="missing"):
        accel.load(file, lock=lock_copy)


@pytest.mark.parametrize(
    "text, match",
    [
        ("schema: other/1\n", "not an accel lock"),
        ("[1, 2\n", "not valid YAML"),
        (f"schema: {LOCK_SCHEMA}\npipeline: {{file: x.py}}\noptimizations: []\n", "corrupt"),
        (f"schema: {LOCK_SCHEMA}\npipeline: {{sha256: abc}}\noptimizations: [{{params: {{}}}}]\n", "corrupt"),
    ],
)
def test_corrupt_or_foreign_lock(tmp_path, text, match):
    path = tmp_path / "accel.lock.yaml"
    path.write_text(text)
    with pytest.raises(LockError, match=match):
        read_lock(path)


def test_empty_lock_returns_the_pipeline_unchanged(tmp_path):
    file = tmp_path / "dead.py"
    shutil.copy(PLANTED / "opt_dead_work.py", file)
    write_lock(tmp_path, Lock(pipeline_file=file.name, pipeline_sha256=file_sha256(file)))
    loaded = accel.load(file, lock=tmp_path)
    assert type(loaded.model).__name__ == "DeadWorkModel"


def test_unknown_optimizer_in_lock(tmp_path):
    file = tmp_path / "dead.py"
    shutil.copy(PLANTED / "opt_dead_work.py", file)
    write_lock(
        tmp_path, Lock(pipeline_file=file.name, pipeline_sha256=file_sha256(file), entries=(LockEntry("warp.drive"),))
    )
    with pytest.raises(LockError, match="unknown optimizer 'warp.drive'"):
        accel.load(file, lock=tmp_path)


def test_lock_is_plain_yaml(optimized):
    _, out, _ = optimized
    data = yaml.safe_load((out / "accel.lock.yaml").read_text())
    assert data["optimizations"][0]["optimizer"] == "onnx.int8_dynamic"
    assert Lock.from_dict(data).to_dict() == data
