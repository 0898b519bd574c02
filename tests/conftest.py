"""Shared fixtures: global state is restored after every test."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

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


def _leftover_processes() -> list[tuple[int, str]]:
    """Processes of this session (they inherited its unique cache root) that would outlive it: any
    whose parent is not another of the session's, except this process's own multiprocessing
    workers, which multiprocessing ends at exit (a worker of a live child ends with that child)."""
    marker = f"ACCEL_CACHE_DIR={_CACHE_ROOT}".encode()
    ours: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if marker not in handle.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/stat", "rb") as handle:
                parent = int(handle.read().rsplit(b")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")[:120]
        except (OSError, ValueError, IndexError):
            continue
        ours[int(entry)] = (parent, command)
    return [
        (pid, command)
        for pid, (parent, command) in ours.items()
        if parent not in ours and not (parent == os.getpid() and "multiprocessing" in command)
    ]


def _is_xdist_controller(config) -> bool:
    return not hasattr(config, "workerinput") and bool(getattr(config.option, "numprocesses", None))


# Leftovers the pytest-xdist workers found, reported by the controller (a worker's own terminal output
# and exit status do not reach the run's).
_WORKER_LEFTOVERS: list[str] = []


def pytest_sessionfinish(session, exitstatus):
    """No test may leave a process behind: any still alive at the end is killed and fails the run.

    Under pytest-xdist each worker checks its own session and hands what it found to the controller
    (pytest_testnodedown), which runs no tests: its workers inherited its cache root."""
    if not _CACHE_ROOT or not os.path.isdir("/proc"):
        return
    if _is_xdist_controller(session.config):
        lines = _WORKER_LEFTOVERS
    else:
        leftovers = _leftover_processes()
        for pid, _ in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        lines = [f"  {pid}: {cmd}" for pid, cmd in leftovers]
        if hasattr(session.config, "workerinput"):
            session.config.workeroutput["leftovers"] = lines
    if lines:
        text = "\n".join(lines)
        session.config.get_terminal_writer().line(f"\nprocesses left running by the tests (killed):\n{text}", red=True)
        session.exitstatus = 1


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist's: a worker ended; keep the leftovers it found."""
    _WORKER_LEFTOVERS.extend(getattr(node, "workeroutput", {}).get("leftovers", []))


def pytest_unconfigure(config):
    if _CACHE_ROOT:
        shutil.rmtree(_CACHE_ROOT, ignore_errors=True)


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    """One real calibration, cached in a temporary ACCEL_CACHE_DIR, at one intra-op thread.

    One thread for calibration and the profiles alike: on a shared CI machine a descheduled OpenMP
    worker stalls every parallel op for a scheduler slice, which no finding is about. The cache
    directory is under the session's base temp dir, so every module that profiles shares one
    calibration.
    """
    from accel.core.calibration import calibrated_machine

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    patch = pytest.MonkeyPatch()
    patch.setenv("ACCEL_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "accel-xdg"))
    try:
        yield calibrated_machine()
    finally:
        patch.undo()
        torch.set_num_threads(threads)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """ACCEL_CACHE_DIR at a new folder holding only the session's calibrations (none decoded)."""
    path = tmp_path / "fresh-cache"
    path.mkdir()
    for calibration in sorted(Path(_CACHE_ROOT).glob("calibration-*.json")):
        shutil.copy2(calibration, path / calibration.name)
    monkeypatch.setenv("ACCEL_CACHE_DIR", str(path))
    return path


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
