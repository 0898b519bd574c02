"""Shared fixtures: global state is restored after every test."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
import torch

_CACHE_ROOT = None


def pytest_configure(config):
    """A per-session cache root (calibration, decoded samples): never the user's ~/.cache.

    Set in the environment, so subprocesses (the console script, bench workers) use it too.
    """
    global _CACHE_ROOT
    _CACHE_ROOT = tempfile.mkdtemp(prefix="accel-test-cache-")
    os.environ["ACCEL_CACHE_DIR"] = _CACHE_ROOT
    os.environ["XDG_CACHE_HOME"] = os.path.join(_CACHE_ROOT, "xdg")
    # torch.compile's worker pool (spawned processes) outlives a forked bench replicate, which leaves
    # by os._exit: compile in-process, so no test leaves a process behind.
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")


def pytest_unconfigure(config):
    if _CACHE_ROOT:
        shutil.rmtree(_CACHE_ROOT, ignore_errors=True)


@pytest.fixture(autouse=True)
def _restore_torch_state():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
