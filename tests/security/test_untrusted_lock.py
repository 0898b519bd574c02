"""A lock is data, never code: a crafted lock runs nothing, reads no file outside its folder, and
points accel's writes nowhere; the user gets one line (LockError; exit 2 in the CLI).

The locks are made cheaply: a tiny linear model exported by onnx.runtime straight into the lock's
folder (no search), the lock written by hand, then edited as an attacker would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import accel
from accel.core.errors import LockError
from accel.core.machine import describe_machine
from accel.optimizing.lock import Lock, LockEntry, artifact_digests, file_sha256, write_lock
from accel.optimizing.optimizers import OPTIMIZERS, Context
from accel.optimizing.optimizers.onnx_runtime import OrtModel

PLANTED = Path(__file__).parents[1] / "planted"
CONSOLE_SCRIPT = Path(sys.executable).with_name("accel")
PIPELINE = (
    "import torch\ntorch.manual_seed(0)\nmodel = torch.nn.Linear(4, 2).eval()\nexample_inputs = (torch.ones(1, 4),)\n"
)
# A module that leaves a marker file when anything imports or runs it.
MARKER_CODE = "from pathlib import Path\nPath(__file__).with_name('MARKER').write_text('ran')\n"


@pytest.fixture
def project(tmp_path):
    """project/pipe.py, and project/out/ holding its ONNX export and a lock naming it."""
    folder = tmp_path / "project"
    folder.mkdir()
    file = folder / "pipe.py"
    file.write_text(PIPELINE)
    out = folder / "out"
    out.mkdir()
    optimizer = OPTIMIZERS.get("onnx.runtime")
    applied = optimizer.apply(accel.load(file), optimizer.Config(), Context(describe_machine(), workdir=out))
    entries = (LockEntry("onnx.runtime", {}, applied.state),)
    lock = Lock(
        pipeline_file=file.name,
        pipeline_sha256=file_sha256(file),
        pipeline_path=str(file),
        entries=entries,
        artifacts=artifact_digests(out, entries),
        target="latency",
    )
    write_lock(out, lock)
    assert isinstance(accel.load(file, lock=out).model, OrtModel)  # the honest lock loads
    return file, out


def edit_lock(out: Path, edit) -> Path:
    path = out / "accel.lock.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def state_of(data: dict) -> dict:
    return data["optimizations"][0]["state"]


def run_console(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The installed console script, wide enough that a path is printed on one line."""
    env = {**os.environ, "COLUMNS": "400"}
    return subprocess.run([str(CONSOLE_SCRIPT), *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def assert_one_line_exit_2(result: subprocess.CompletedProcess, *needles: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert all(needle in lines[0] for needle in needles), (needles, lines[0])
    assert "Traceback" not in result.stderr + result.stdout


# --- the output structure's class: never imported ------------------------------------------------
def _name_a_marker_class(project_folder: Path, out: Path) -> None:
    (project_folder / "marker_mod.py").write_text(MARKER_CODE + "class Out(dict):\n    pass\n")
    structure = {"kind": "mapping", "class": "marker_mod:Out", "keys": ["y"], "items": [{"kind": "tensor"}]}
    edit_lock(out, lambda data: state_of(data).update(output_structure=structure))


def test_a_lock_naming_a_class_in_a_module_imports_nothing(project, monkeypatch):
    file, out = project
    _name_a_marker_class(file.parent, out)
    monkeypatch.syspath_prepend(str(file.parent))  # the project folder importable, as under python -m
    try:
        with pytest.raises(LockError, match=r"output_structure\.class names the class 'marker_mod:Out'"):
            loaded = accel.load(file, lock=out)
            loaded.model(*loaded.inputs)  # today's code imports the module on the first call
    finally:
        sys.modules.pop("marker_mod", None)
    assert not (file.parent / "MARKER").exists()


def test_the_console_script_refuses_a_class_the_lock_names_in_one_line(project):
    file, out = project
    _name_a_marker_class(file.parent, out)
    # python -m accel puts the working folder (the project) on sys.path, as a user's shell would
    result = subprocess.run(
        [sys.executable, "-m", "accel", "verify", "out", "--budget", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=file.parent,
    )
    assert not (file.parent / "MARKER").exists()
    assert_one_line_exit_2(result, "marker_mod:Out")


# --- files the lock names: inside its folder, listed and hashed ----------------------------------
@pytest.mark.parametrize("where", ["absolute", "dotdot", "unlisted"])
def test_an_onnx_file_outside_the_lock_or_unlisted_is_refused(project, tmp_path, where):
    file, out = project
    onnx_name = yaml.safe_load((out / "accel.lock.yaml").read_text())["optimizations"][0]["state"]["onnx_file"]
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy(out / onnx_name, outside)
    shutil.copy(out / onnx_name, out / "unlisted.onnx")
    name = {"absolute": str(outside), "dotdot": "../../elsewhere.onnx", "unlisted": "unlisted.onnx"}[where]
    edit_lock(out, lambda data: state_of(data).update(onnx_file=name))
    with pytest.raises(LockError, match="onnx_file"):
        accel.load(file, lock=out)


def test_an_artifact_the_lock_lists_outside_its_folder_is_refused(project):
    file, out = project
    secret = file.parent / "secret.txt"
    secret.write_text("not for the lock")
    edit_lock(out, lambda data: data["artifacts"].update({"../secret.txt": file_sha256(secret)}))
    with pytest.raises(LockError, match="artifacts entry '../secret.txt'"):
        accel.load(file, lock=out)


def test_a_symlink_in_the_lock_folder_leading_out_is_refused(project, tmp_path):
    file, out = project
    onnx_name = yaml.safe_load((out / "accel.lock.yaml").read_text())["optimizations"][0]["state"]["onnx_file"]
    shutil.move(out / onnx_name, tmp_path / "moved.onnx")
    (out / onnx_name).symlink_to(tmp_path / "moved.onnx")
    with pytest.raises(LockError, match="leads out of the lock's folder"):
        accel.load(file, lock=out)


def test_force_skips_a_changed_digest_never_an_unlisted_file(project):
    file, out = project
    onnx_name = yaml.safe_load((out / "accel.lock.yaml").read_text())["optimizations"][0]["state"]["onnx_file"]
    shutil.copy(out / onnx_name, out / "unlisted.onnx")
    edit_lock(out, lambda data: state_of(data).update(onnx_file="unlisted.onnx"))
    with pytest.raises(LockError, match="artifacts do not list"):
        accel.load(file, lock=out, force=True)


def test_a_lock_cannot_point_the_decoded_cache_elsewhere(tmp_path):
    file = tmp_path / "decode.py"
    shutil.copy(PLANTED / "dp_decode_bound.py", file)
    elsewhere = tmp_path / "elsewhere"
    entry = LockEntry("cache.decoded", {"cache_dir": str(elsewhere)}, {"stages": ["decode"]})
    lock = Lock(pipeline_file=file.name, pipeline_sha256=file_sha256(file), entries=(entry,), target="throughput")
    out = tmp_path / "out"
    write_lock(out / "accel.lock.yaml", lock)
    with pytest.raises(LockError, match="params.cache_dir"):
        accel.load(file, lock=out)
    assert not elsewhere.exists()


# --- accel verify: the pipeline beside the lock, never a path from it ----------------------------
def test_verify_never_runs_the_file_the_lock_s_path_names(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    file = folder / "pipe.py"
    file.write_text(PIPELINE)
    evil = tmp_path / "evil" / "pipe.py"
    evil.parent.mkdir()
    evil.write_text(MARKER_CODE + PIPELINE)
    lock = Lock(pipeline_file="pipe.py", pipeline_sha256=file_sha256(file), pipeline_path=str(evil))
    write_lock(folder / "out" / "accel.lock.yaml", lock)
    result = run_console(tmp_path, "verify", str(folder / "out"), "--budget", "1")
    assert not (evil.parent / "MARKER").exists()
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"pipeline loaded from {file}" in result.stdout


def test_verify_refuses_a_file_beside_the_lock_that_is_not_the_locked_one_before_running_it(tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    file = folder / "pipe.py"
    file.write_text(MARKER_CODE + PIPELINE)
    lock = Lock(pipeline_file="pipe.py", pipeline_sha256="0" * 64)
    write_lock(folder / "out" / "accel.lock.yaml", lock)
    result = run_console(tmp_path, "verify", str(folder / "out"), "--budget", "1")
    assert not (folder / "MARKER").exists()
    assert_one_line_exit_2(result, "changed since")


def test_verify_exits_2_on_a_broken_lock_not_1(project):
    file, out = project
    edit_lock(out, lambda data: state_of(data).update(onnx_file="../pipe.py"))
    assert_one_line_exit_2(run_console(file.parent, "verify", "out", "--budget", "1"), "onnx_file")
