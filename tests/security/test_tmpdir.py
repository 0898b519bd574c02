"""Nothing is written outside the output folder, even by the libraries accel drives: with $TMPDIR an
empty folder, an `accel optimize` that imports onnxruntime and compiles leaves it empty (inductor's
kernels and precompiled headers go to accel's cache, ONNX Runtime's telemetry writes no `.ses`), and
a variable the user set is left as it is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from accel.core import library_env
from accel.core.io import cache_root

CONSOLE_SCRIPT = Path(sys.executable).with_name("accel")
TINY = "import torch\nmodel = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()\n"
TINY += "example_inputs = (torch.ones(2, 8),)\n"


@pytest.mark.slow
def test_an_optimize_that_imports_onnxruntime_and_compiles_leaves_tmpdir_empty(tmp_path):
    temp, cache = tmp_path / "tmp", tmp_path / "cache"
    temp.mkdir()
    (tmp_path / "tiny.py").write_text(TINY)
    env = {**os.environ, "TMPDIR": str(temp), "ACCEL_CACHE_DIR": str(cache)}
    for variable in library_env.library_env():
        env.pop(variable, None)
    done = subprocess.run(
        [str(CONSOLE_SCRIPT), "optimize", "tiny.py", "--only", "onnx.runtime,compile", "--budget", "60"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=400,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in temp.iterdir()) == []
    assert (cache / "torchinductor" / "precompiled_headers").is_dir(), done.stdout  # it did compile


def test_each_variable_is_set_unless_the_user_set_it(monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.setenv("ACCEL_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(library_env.ORT_TELEMETRY_VARIABLE, "0")
    monkeypatch.delenv(library_env.INDUCTOR_CACHE_VARIABLE, raising=False)
    library_env.keep_library_files_in_cache()
    assert os.environ[library_env.ORT_TELEMETRY_VARIABLE] == "0"
    assert os.environ[library_env.INDUCTOR_CACHE_VARIABLE] == str(cache_root() / "torchinductor")


def test_inductor_headers_move_only_with_the_cache_accel_set(monkeypatch, tmp_path):
    codecache = ModuleType(library_env.INDUCTOR_CODECACHE)
    codecache._HEADER_DIR = "/tmp/torchinductor_user/precompiled_headers"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, library_env.INDUCTOR_CODECACHE, codecache)
    monkeypatch.setenv("ACCEL_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(library_env.INDUCTOR_CACHE_VARIABLE, str(tmp_path / "users-own"))
    library_env.keep_library_files_in_cache()
    assert codecache._HEADER_DIR == "/tmp/torchinductor_user/precompiled_headers"  # type: ignore[attr-defined]
    monkeypatch.delenv(library_env.INDUCTOR_CACHE_VARIABLE)
    library_env.keep_library_files_in_cache()
    assert codecache._HEADER_DIR == str(tmp_path / "torchinductor" / "precompiled_headers")  # type: ignore[attr-defined]


def test_the_headers_move_when_inductor_is_imported_later(tmp_path):
    """The import hook, in a fresh interpreter: inductor's codecache imported after accel set up."""
    probe = (
        "from accel.core.library_env import keep_library_files_in_cache\n"
        "keep_library_files_in_cache()\n"
        "import torch._inductor.codecache as c\n"
        "print(c._HEADER_DIR)\n"
    )
    env = {**os.environ, "ACCEL_CACHE_DIR": str(tmp_path)}
    env.pop(library_env.INDUCTOR_CACHE_VARIABLE, None)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(tmp_path / "torchinductor" / "precompiled_headers")
