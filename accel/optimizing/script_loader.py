"""DataLoader settings applied to a script from outside it, and the script lock that records them.

A training script builds its own DataLoaders, so accel cannot hand it a tuned Pipeline. Instead,
for the duration of a run, `DataLoader.__init__` is wrapped (restored afterwards, as
accel.profiling.script wraps the iterator's `__next__`) and the tuned settings replace what the
script passed: num_workers, prefetch_factor, persistent_workers, pin_memory (only where CUDA is
available). Every DataLoader the script creates gets the same setting. The user's file is never
changed. `accel optimize SCRIPT` searches these settings; `accel run SCRIPT --lock LOCK` and
`apply_loader_settings(LOCK)` re-apply the one it kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader

from accel.core.errors import LockError, PipelineLoadError
from accel.core.loading import Script, check_file
from accel.core.measure import thread_count
from accel.core.watchdog import children_reaped
from accel.optimizing.lock import SCRIPT_LOCK, Lock, check_lock, lock_file, read_lock
from accel.optimizing.lock_files import FORCE_HINT
from accel.optimizing.optimizers.loader_tune import Setting
from accel.profiling.script import run_script

# The lock entry that holds a script's DataLoader setting.
SCRIPT_LOADER_ENTRY = "script.loader"
TUNED_ARGUMENTS = ("num_workers", "prefetch_factor", "persistent_workers", "pin_memory")


@dataclasses.dataclass(frozen=True)
class CreatedLoader:
    """One DataLoader the script created: what it asked for and what it got."""

    asked: dict[str, Any]
    got: dict[str, Any]


def loader_arguments(setting: Setting) -> dict[str, Any]:
    """The DataLoader arguments a setting sets. Without workers, prefetch_factor and
    persistent_workers must keep their defaults (DataLoader refuses them otherwise)."""
    workers = setting.num_workers > 0
    return {
        "num_workers": setting.num_workers,
        "prefetch_factor": setting.prefetch_factor if workers else None,
        "persistent_workers": setting.persistent_workers if workers else False,
        "pin_memory": setting.pin_memory and torch.cuda.is_available(),
    }


@contextlib.contextmanager
def loader_settings(setting: Setting | None, created: list[CreatedLoader] | None = None) -> Iterator[None]:
    """Every DataLoader built while the block runs gets `setting` (None: what the script passed);
    each is recorded in `created`. DataLoader.__init__ is restored afterwards."""
    original = DataLoader.__init__
    signature = inspect.signature(original)

    def init(loader: Any, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(loader, *args, **kwargs)
        asked = {name: bound.arguments.get(name, signature.parameters[name].default) for name in TUNED_ARGUMENTS}
        if setting is not None:
            bound.arguments.update(loader_arguments(setting))
        got = {name: bound.arguments.get(name, signature.parameters[name].default) for name in TUNED_ARGUMENTS}
        if created is not None:
            created.append(CreatedLoader(asked, got))
        original(*bound.args, **bound.kwargs)

    setattr(DataLoader, "__init__", init)
    try:
        yield
    finally:
        setattr(DataLoader, "__init__", original)


def script_setting(lock: Lock, where: Path) -> Setting | None:
    """The DataLoader setting a script lock keeps; None when it kept none (the script's own stay)."""
    if lock.kind != SCRIPT_LOCK:
        raise LockError(
            f"{where} is a pipeline lock (for {lock.pipeline_file}), not a script's DataLoader settings",
            f"re-apply it with accel.load({lock.pipeline_file!r}, lock=...), or run accel optimize on the script",
        )
    entries = [e for e in lock.entries if e.optimizer == SCRIPT_LOADER_ENTRY]
    if not entries:
        return None
    try:
        setting = Setting(**entries[0].state)
    except TypeError as exc:
        raise LockError(
            f"{where} is corrupt: the {SCRIPT_LOADER_ENTRY} entry has {sorted(entries[0].state)}",
            "run accel optimize again to write a fresh lock",
        ) from exc
    for name, value in dataclasses.asdict(setting).items():  # data from a lock: the types are checked too
        whole = isinstance(value, int) and not isinstance(value, bool)
        valid = {
            "num_workers": whole and value >= 0,
            "prefetch_factor": value is None or (whole and value >= 1),
        }.get(name, isinstance(value, bool))
        if not valid:
            raise LockError(
                f"{where} is corrupt: the {SCRIPT_LOADER_ENTRY} entry's {name} is {value!r}",
                "run accel optimize again to write a fresh lock",
            )
    return setting


def read_script_lock(
    lock: str | os.PathLike, script: str | os.PathLike | None, *, force: bool = False
) -> Setting | None:
    """The setting a script lock keeps (None: it kept none), after checking it was written for
    `script` as it is now (its sha256, and the torch version it was measured with)."""
    target = lock_file(Path(lock))
    found = read_lock(target)
    setting = script_setting(found, target)
    if script is not None:
        file = check_file(script)
        if file.name != found.pipeline_file and not force:
            raise LockError(
                f"{target} was written for {found.pipeline_file}, not {file.name}",
                f"pass the lock accel optimize wrote for {file.name}, or run accel optimize {file}",
            )
        if not force:
            check_lock(found, target, None, file)
    return setting


@contextlib.contextmanager
def apply_loader_settings(
    lock: str | os.PathLike, script: str | os.PathLike | None = None, *, force: bool = False
) -> Iterator[Setting | None]:
    """Within the block, every DataLoader created gets the setting the script lock keeps.

        with apply_loader_settings("accel-runs/train/optimize/accel.lock.yaml", "train.py"):
            train()

    With `script`, the lock is checked against that file first (LockError when it changed).
    Yields the setting (None when the lock kept none: the script's own settings stay)."""
    setting = read_script_lock(lock, script, force=force)
    with loader_settings(setting):
        yield setting


def measured_threads(lock: str | os.PathLike) -> int | None:
    """The torch thread count the kept setting was measured at (None: the lock kept none)."""
    entries = [e for e in read_lock(lock_file(Path(lock))).entries if e.optimizer == SCRIPT_LOADER_ENTRY]
    threads = entries[0].params.get("threads") if entries else None
    return int(threads) if isinstance(threads, int) and threads > 0 else None


def run_with_lock(
    script: Script, lock: str | os.PathLike, *, force: bool = False, threads: int | None = None
) -> tuple[Setting | None, list[CreatedLoader], int]:
    """Run the script as __main__ with the lock's DataLoader setting, at the torch thread count it was
    measured at (or `threads`); returns the setting, the loaders built and the thread count."""
    try:
        setting = read_script_lock(lock, script.path, force=force)
    except LockError as exc:
        if exc.hint != FORCE_HINT:
            raise
        raise LockError(exc.message, "run accel optimize again, or pass --force to accel run") from exc
    created: list[CreatedLoader] = []
    with (
        children_reaped(),  # the processes the script started and left running end with its run
        thread_count(threads or measured_threads(lock)) as count,
        loader_settings(setting, created),
    ):
        run_script(script)
    return setting, created, count


def as_script(path: str | os.PathLike, args: tuple[str, ...] = ()) -> Script:
    """A .py file to run as __main__ (whatever it defines)."""
    file = check_file(path)
    if file.suffix != ".py":
        raise PipelineLoadError(f"{file} is not a Python script", "accel run takes the .py script the lock is for")
    return Script(path=file, args=tuple(args))
