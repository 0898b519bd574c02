"""Nothing is written outside the output folder: a symlink planted there (named as an artifact or
the lock accel is about to write) is replaced, never written through to the file it points to."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import accel
from accel.core.io import copy_file_atomic, write_bytes_atomic
from accel.core.machine import describe_machine
from accel.optimizing.optimizers import OPTIMIZERS
from accel.optimizing.optimizers._model_io import artifact_name
from accel.optimizing.recipes import parse_recipe
from accel.optimizing.run import optimize

PLANTED = Path(__file__).parents[1] / "planted"
USER_TEXT = "the user's own file\n"
INT8_RECIPE = {
    "name": "int8",
    "target": "latency",
    "guard": {"min_cosine": 0.995},
    "rules": [{"name": "int8", "try": ["onnx.int8_dynamic"]}],
}


def _plant(link: Path, user_file: Path) -> None:
    user_file.write_text(USER_TEXT)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(user_file)


@pytest.mark.parametrize("writer", ["write_bytes_atomic", "copy_file_atomic"])
def test_the_atomic_writers_replace_a_symlink_rather_than_follow_it(tmp_path, writer):
    link, user_file = tmp_path / "out" / "artifact.bin", tmp_path / "user.txt"
    _plant(link, user_file)
    source = tmp_path / "source.bin"
    source.write_bytes(b"accel's bytes")
    os.chmod(source, 0o640)
    if writer == "write_bytes_atomic":
        write_bytes_atomic(link, b"accel's bytes")
    else:
        copy_file_atomic(source, link)
        assert os.stat(link).st_mode & 0o777 == 0o640  # the mode comes along, as with copy2
    assert user_file.read_text() == USER_TEXT
    assert not link.is_symlink() and link.read_bytes() == b"accel's bytes"
    assert sorted(p.name for p in link.parent.iterdir()) == ["artifact.bin"]  # no temporary file left


def test_optimize_never_writes_through_a_symlink_in_the_output_folder(tmp_path):
    file = tmp_path / "wide_mlp.py"
    shutil.copy(PLANTED / "opt_wide_mlp.py", file)
    optimizer = OPTIMIZERS.get("onnx.int8_dynamic")
    # each rung's name (on AVX2 without VNNI the first two miss the guard and reduce_range is kept)
    configs = [optimizer.Config(), *optimizer.safer_variants(optimizer.Config(), describe_machine("cpu"))]
    names = [artifact_name("onnx-int8_dynamic", accel.load(file), config) + ".onnx" for config in configs]
    out = tmp_path / "out"
    for name in names:
        _plant(out / name, tmp_path / "user_model.txt")
    _plant(out / "accel.lock.yaml", tmp_path / "user_notes.txt")
    result = optimize(file, parse_recipe(INT8_RECIPE), out_dir=out, budget_seconds=60)
    assert [c.optimizer for c in result.result.choices] == ["onnx.int8_dynamic"], result.result.message
    onnx_name = result.result.choices[0].state["onnx_file"]
    assert onnx_name in names  # a planted name was the one written
    assert (tmp_path / "user_model.txt").read_text() == USER_TEXT
    assert (tmp_path / "user_notes.txt").read_text() == USER_TEXT
    assert not (out / onnx_name).is_symlink() and not (out / "accel.lock.yaml").is_symlink()
    assert accel.load(file, lock=out).model is not None
