"""A watchdog for user code, and the ending of every process accel started.

accel runs the user's code (decode, transform, collate, the model...) inside `watching(stage)`.
Once a command arms the watchdog (`arm(budget_seconds, on_hang)`), a monitor thread checks the
call in progress; when one stage call has not returned within `hang_limit_seconds(budget)` it is
taken as hung: `on_hang` gets the stage's name and the Python stack of the stuck call (to report
it), the processes accel started are ended and the process exits with code 2. Unarmed (the Python
API), `watching` only records the stage and nothing else happens.

`end_children()` ends the process groups registered with `started_group` (torchrun runs in a
session of its own, out of reach of a terminal's Ctrl-C) and every descendant of this process;
the CLI calls it on Ctrl-C, SIGTERM and a hang. `user_exit_refused()` makes `os._exit` from user
code (a script that leaves without returning) an error rather than the silent end of accel.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import gc
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Callable, Iterator

from accel.core.errors import PipelineError

# A stage call is hung once it runs this many times the budget, and at least GRACE past it: a budget
# bounds the measuring, not one call, so only a call far past any budget is taken as stuck (a slow
# first call, a model load inside decode, a loaded machine all stay well inside it).
HANG_BUDGET_FACTOR = 3.0
HANG_GRACE_SECONDS = 30.0
# How often the monitor looks at the call in progress; a hang is reported at most this late.
CHECK_INTERVAL_SECONDS = 0.5
# Seconds a process gets between SIGTERM and SIGKILL.
END_GRACE_SECONDS = 3.0
HUNG_EXIT_CODE = 2
# os._exit as Python defines it, for the monitor (user_exit_refused replaces the module attribute).
_real_exit = os._exit


def hang_limit_seconds(budget_seconds: float) -> float:
    """How long one call of user code may run under `budget_seconds` before it is taken as hung."""
    return max(HANG_BUDGET_FACTOR * budget_seconds, budget_seconds + HANG_GRACE_SECONDS)


@dataclasses.dataclass(frozen=True)
class Hang:
    """A stage call that did not return: its stage, how long it had run, its Python stack."""

    stage: str
    seconds: float
    stack: str


@dataclasses.dataclass
class _Call:
    stage: str
    started: float
    thread_id: int


@dataclasses.dataclass
class _Watch:
    limit_seconds: float
    on_hang: Callable[[Hang], None]
    stop: threading.Event


_calls: dict[int, list[_Call]] = {}  # thread id -> its stage calls in progress, outermost first
_watch: _Watch | None = None
_groups: set[int] = set()


@contextlib.contextmanager
def watching(stage: str) -> Iterator[None]:
    """Run a call of the user's `stage` under the watchdog (when armed)."""
    thread_id = threading.get_ident()
    stack = _calls.setdefault(thread_id, [])
    stack.append(_Call(stage, time.monotonic(), thread_id))
    try:
        yield
    finally:
        stack.pop()


def arm(budget_seconds: float, on_hang: Callable[[Hang], None], *, limit_seconds: float | None = None) -> None:
    """Start the monitor: a stage call past `limit_seconds` (default hang_limit_seconds(budget_seconds))
    ends the process."""
    disarm()
    global _watch
    limit = limit_seconds if limit_seconds is not None else hang_limit_seconds(budget_seconds)
    _watch = _Watch(limit, on_hang, threading.Event())
    threading.Thread(target=_monitor, args=(_watch,), name="accel-watchdog", daemon=True).start()


def disarm() -> None:
    global _watch
    if _watch is not None:
        _watch.stop.set()
        _watch = None


def hung_call(now: float, limit_seconds: float) -> Hang | None:
    """The stage call that has run past `limit_seconds` (its innermost stage named), or None."""
    for stack in list(_calls.values()):
        calls = list(stack)
        if calls and now - calls[0].started > limit_seconds:
            call = calls[-1]
            frame = sys._current_frames().get(call.thread_id)
            text = "".join(traceback.format_stack(frame)) if frame is not None else ""
            return Hang(call.stage, now - calls[0].started, text)
    return None


def _monitor(watch: _Watch) -> None:
    while not watch.stop.wait(CHECK_INTERVAL_SECONDS):
        hang = hung_call(time.monotonic(), watch.limit_seconds)
        if hang is None:
            continue
        try:
            watch.on_hang(hang)
        finally:
            end_children()
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            _real_exit(HUNG_EXIT_CODE)


# --- the processes accel started -----------------------------------------------------------------
def started_group(pgid: int) -> None:
    """Register a process group accel started in a session of its own, to be ended with the rest."""
    _groups.add(pgid)


def finished_group(pgid: int) -> None:
    _groups.discard(pgid)


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid`, children before grandchildren (Linux /proc; else none)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = entry.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    found, frontier = [], [pid]
    while frontier:
        kids = [kid for parent in frontier for kid in children.get(parent, [])]
        found += kids
        frontier = kids
    return found


def end_children() -> None:
    """End the registered process groups and every descendant: SIGTERM, then SIGKILL after a grace."""
    targets = descendants(os.getpid())
    for pgid in list(_groups):
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGTERM)
    for pid in targets:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + END_GRACE_SECONDS
    while time.monotonic() < deadline and _alive(targets):
        _reap()
        time.sleep(0.05)
    for pgid in list(_groups):
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)
    for pid in targets + descendants(os.getpid()):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    _reap()
    _groups.clear()


def end_group(pgid: int) -> None:
    """Kill what is left of a process group accel started in a session of its own (the children a
    replicate's or a script's code started and left behind), and forget it."""
    with contextlib.suppress(OSError):
        os.killpg(pgid, signal.SIGKILL)
    finished_group(pgid)


@contextlib.contextmanager
def children_reaped() -> Iterator[None]:
    """End, when the block ends, every process started inside it that is still running: the
    children (and their children) a user's script left behind, which would otherwise outlive accel.

    This process is a child subreaper while the block runs, so a daemon that double-forks (its
    parent exits, which would hand it to init) becomes accel's child and is ended with the rest."""
    before = set(descendants(os.getpid()))
    was_subreaper = _subreaper(True)
    try:
        yield
    finally:
        gc.collect()  # ended DataLoader iterators first shut their workers down cleanly
        end_processes([pid for pid in descendants(os.getpid()) if pid not in before])
        _subreaper(was_subreaper)


# prctl(2) options (linux/prctl.h): orphaned descendants reparent to a subreaper, not to init.
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37


def _subreaper(on: bool) -> bool:
    """Make this process a child subreaper (or stop being one); whether it was one before.
    Linux only: elsewhere (no prctl) nothing changes and the answer is False."""
    libc = _libc()
    if libc is None:
        return False
    was = ctypes.c_int(0)
    if libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(was), 0, 0, 0) != 0:
        return False
    libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)
    return bool(was.value)


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    return libc if hasattr(libc, "prctl") else None


def end_processes(pids: list[int]) -> None:
    """SIGTERM to each, SIGKILL to those still running after END_GRACE_SECONDS; our own exited
    children among them are collected (no zombies), others' are left to their parents."""
    if not pids:
        return
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + END_GRACE_SECONDS
    while time.monotonic() < deadline and _alive(pids):
        _collect(pids)
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    _collect(pids)


def _collect(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def _alive(pids: list[int]) -> bool:
    def running(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")

    return any(running(pid) for pid in pids)


def _reap() -> None:
    """Collect our exited children (zombies) so they do not linger."""
    with contextlib.suppress(ChildProcessError, OSError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


# --- user code that ends the process ------------------------------------------------------------
class UserExitError(PipelineError):
    """User code called os._exit: accel's process would have ended with nothing measured or written."""


@contextlib.contextmanager
def user_exit_refused() -> Iterator[None]:
    """`os._exit` from user code in this process raises UserExitError instead of ending accel
    silently (exit 0, no report, no lock); a forked child (a DataLoader worker, a bench replicate)
    still exits as it asked."""
    main_pid = os.getpid()

    def refused(code: int) -> None:
        if os.getpid() != main_pid:
            _real_exit(code)
        raise UserExitError(
            f"the pipeline's code called os._exit({code}) before accel could measure it: nothing was written",
            "let the script return (or call sys.exit) instead of os._exit",
        )

    os._exit = refused  # type: ignore[assignment]
    try:
        yield
    finally:
        os._exit = _real_exit
