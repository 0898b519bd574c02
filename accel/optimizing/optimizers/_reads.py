"""What a cached stage depends on beyond its raw sample: the files it reads and the RNGs it draws from.

A raw sample is often a reference (a file name that decode joins to a root folder, an index, a key):
hashing the sample alone would serve a record after the file it names was rewritten. While a stage
runs, Python's audit hook (`sys.addaudithook`, PEP 578) reports every `open` (builtins.open,
io.open, os.open: what PIL, numpy, torch.load and plain Python use) and every network or database
connection. Each regular file opened for reading is recorded as (path, size, mtime_ns, inode) and
checked on every hit; a connection cannot be checked, so a stage that makes one is reported as
untracked and not cached unless the user opts in. Files read by native code that bypasses Python
(OpenCV's imread, say) are not seen: README says so.

Randomness: a stage draws from an RNG when the global torch, numpy or random state advances across
a call; that is checked over several samples, and the states are put back afterwards.
"""

from __future__ import annotations

import contextlib
import os
import random
import stat
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

# Audit events that reach data outside any file accel can stat.
UNTRACKED_EVENTS = ("socket.connect", "socket.getaddrinfo", "sqlite3.connect", "urllib.Request", "http.client.connect")
# Files under these are library code being imported, not data.
_LIBRARY_ROOTS = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})
_CODE_SUFFIXES = (".py", ".pyc", ".so", ".pth")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT

_local = threading.local()
_hook_lock = threading.Lock()
_hook_installed = False


class Reads:
    """What one stage call touched."""

    def __init__(self) -> None:
        self.paths: set[str] = set()
        self.untracked: set[str] = set()


def _audit(event: str, args: tuple) -> None:
    reads = getattr(_local, "reads", None)
    if reads is None:
        return
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        if isinstance(path, int) or path is None:
            return
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and mode is None and bool(flags & _WRITE_FLAGS)
        )
        if not writing:
            reads.paths.add(os.path.abspath(os.fsdecode(path)))
    elif event in UNTRACKED_EVENTS:
        reads.untracked.add(event)


def _install_hook() -> None:
    global _hook_installed
    with _hook_lock:
        if not _hook_installed:
            sys.addaudithook(_audit)  # cannot be removed; does nothing outside `recording_reads`
            _hook_installed = True


@contextlib.contextmanager
def recording_reads() -> Iterator[Reads]:
    """Record what the code inside the block opens (this thread only)."""
    _install_hook()
    reads = Reads()
    previous = getattr(_local, "reads", None)
    _local.reads = reads
    try:
        yield reads
    finally:
        _local.reads = previous


def file_facts(paths: set[str], exclude: Path | None = None) -> list[dict[str, Any]]:
    """(path, size, mtime_ns, inode) of each regular data file among `paths`."""
    facts = []
    skip = str(exclude) if exclude is not None else None
    for path in sorted(paths):
        if path.endswith(_CODE_SUFFIXES) or path.startswith(_LIBRARY_ROOTS) or (skip and path.startswith(skip)):
            continue
        try:
            info = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(info.st_mode):
            facts.append({"path": path, "size": info.st_size, "mtime_ns": info.st_mtime_ns, "inode": info.st_ino})
    return facts


def changed_file(facts: list[dict[str, Any]]) -> str | None:
    """The first recorded file that is gone or differs now; None when all are as recorded."""
    for fact in facts:
        try:
            info = os.stat(fact["path"])
        except OSError:
            return fact["path"]
        if (info.st_size, info.st_mtime_ns, info.st_ino) != (fact["size"], fact["mtime_ns"], fact["inode"]):
            return fact["path"]
    return None


# --- randomness --------------------------------------------------------------------------------------
def _rng_states() -> tuple[Any, Any, Any]:
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _restore(states: tuple[Any, Any, Any]) -> None:
    torch.set_rng_state(states[0])
    np.random.set_state(states[1])
    random.setstate(states[2])


def advanced_rngs(before: tuple[Any, Any, Any], after: tuple[Any, Any, Any]) -> list[str]:
    names = []
    if not torch.equal(before[0], after[0]):
        names.append("torch")
    if before[1][2] != after[1][2] or not np.array_equal(before[1][1], after[1][1]):
        names.append("numpy")
    if before[2] != after[2]:
        names.append("random")
    return names


def draws_randomness(stage: Callable[[Any], Any], samples: list[Any]) -> str | None:
    """Which global RNG `stage` advances on any of `samples` ('torch', 'numpy', 'random'), else None.
    The RNG states are put back, so probing does not shift the user's random stream."""
    saved = _rng_states()
    try:
        for raw in samples:
            before = _rng_states()
            stage(raw)
            advanced = advanced_rngs(before, _rng_states())
            if advanced:
                return ", ".join(advanced)
    finally:
        _restore(saved)
    return None
