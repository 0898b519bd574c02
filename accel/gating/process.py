"""What a replicate measures (BenchConfig, Side) and setting up its process: the noise controls, the environment at start, what it imported.

Noise is reduced where it is made: each replicate is pinned to a fixed set of cores
(`os.sched_setaffinity`: all usable cores unless `cores` names fewer), runs a fixed number of
torch threads (`threads`, else one per pinned core), and times its calls with the garbage
collector off (collected once before). A side's environment variables reach a spawned replicate
at process start, before torch is imported (OMP_*, KMP_*, CUDA_* are read only then); the fork
launcher, whose child inherits a loaded torch, refuses them. Each replicate records the file of
every user module it imported, so the gate can prove which checkout a side's code came from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import sys
from pathlib import Path
from typing import IO, Any, Iterator

import torch

from accel.core import watchdog
from accel.core.errors import BenchError

LAUNCHERS = ("spawn", "fork", "inline")
# One call of the pipeline's code past this is taken as hung when no --budget says otherwise: room
# for a first call that compiles a model on a busy machine.
DEFAULT_HANG_SECONDS = 120.0


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """How each replicate measures: warm-up calls, then timed calls for about `budget_seconds`.

    One call of the pipeline's code that runs past `hang_seconds` is taken as hung: the replicate
    reports the stage and its stack and ends (the default leaves room for a first call that compiles
    a model on a busy machine; a hung forward is reported in minutes, not after the 600 s backstop).
    """

    replicates: int = 6
    warmup_calls: int = 3
    min_calls: int = 10
    max_calls: int = 1000
    budget_seconds: float = 0.5
    threads: int | None = None
    memory: bool = True
    launcher: str = "spawn"
    cores: tuple[int, ...] | None = None
    hang_seconds: float = DEFAULT_HANG_SECONDS

    def __post_init__(self) -> None:
        for name in ("replicates", "min_calls", "max_calls"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BenchConfig.{name} must be an int >= 1, got {value!r}")
        if self.warmup_calls < 0:
            raise ValueError(f"BenchConfig.warmup_calls must be >= 0, got {self.warmup_calls}")
        if self.max_calls < self.min_calls:
            raise ValueError(f"BenchConfig.max_calls ({self.max_calls}) must be >= min_calls ({self.min_calls})")
        if self.budget_seconds <= 0:
            raise ValueError(f"BenchConfig.budget_seconds must be > 0, got {self.budget_seconds}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"BenchConfig.threads must be >= 1 or None, got {self.threads}")
        if self.cores is not None and (not self.cores or any(c < 0 for c in self.cores)):
            raise ValueError(f"BenchConfig.cores must name core numbers >= 0, got {self.cores!r}")
        if self.hang_seconds <= 0:
            raise ValueError(f"BenchConfig.hang_seconds must be > 0, got {self.hang_seconds}")
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"BenchConfig.launcher must be one of {', '.join(LAUNCHERS)}, got {self.launcher!r}")


@dataclasses.dataclass(frozen=True)
class Side:
    """One version of the pipeline: its file, the folder it runs from, extra environment variables,
    and import roots put first on sys.path (the checkout's src/ layout, PYTHONPATH, editable
    installs, mapped into the checkout this side measures)."""

    file: Path
    cwd: Path | None = None
    lock: Path | None = None
    env: tuple[tuple[str, str], ...] = ()
    paths: tuple[str, ...] = ()


def hang_seconds_for(budget_seconds: float | None, *, tighten_only: bool = False) -> float:
    """A replicate's hang limit under a command's `--budget`: the watchdog's limit for that budget
    (the one profile and optimize use); None: the default. With `tighten_only` (the gate, whose
    budget bounds the adding of pairs, not one call) never past the default."""
    if budget_seconds is None:
        return DEFAULT_HANG_SECONDS
    limit = watchdog.hang_limit_seconds(budget_seconds)
    return min(limit, DEFAULT_HANG_SECONDS) if tighten_only else limit


# Settings the OpenMP, Intel and CUDA runtimes read once, when torch loads them: a side's values
# for them must be in the environment at process start.
START_ONLY_PREFIXES = ("OMP_", "KMP_", "CUDA_", "MKL_", "GOMP_")


def quiet_process(config: BenchConfig) -> tuple[int, ...]:
    """Pin this process to a fixed set of cores and fix torch's thread count; returns the cores."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: no pinning
        allowed = list(range(os.cpu_count() or 1))
    cores = tuple(c for c in (config.cores or allowed) if c in allowed) or tuple(allowed)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    torch.set_num_threads(config.threads or len(cores))
    return cores


@contextlib.contextmanager
def collector_off() -> Iterator[None]:
    """No garbage collection inside timed calls: a collection lands on whichever call runs then."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_side(side: Side, config: BenchConfig, *, apply_env: bool) -> Any:
    """Enter a side in this process (folder, import roots, environment, pinning) and load it."""
    from accel.optimizing.lock import load

    if side.cwd is not None:
        os.chdir(side.cwd)
    if apply_env:
        os.environ.update(dict(side.env))
    sys.path[:0] = [p for p in side.paths if p not in sys.path[: len(side.paths)]]
    quiet_process(config)
    # The import (and the lock's re-application) is the pipeline's code too: a hang in it is
    # reported by the replicate's watchdog with the same limit as a hung forward.
    with watchdog.watching("import" if side.lock is None else "load"):
        return load(side.file, side.lock)


def user_modules() -> dict[str, str]:
    """name -> file of every imported module that is neither the standard library, an installed
    package (site-packages) nor accel itself: the user's own code, wherever it came from."""
    skip = {Path(p).resolve() for p in {sys.prefix, sys.base_prefix, sys.exec_prefix}}
    accel_root = Path(__file__).resolve().parents[1]
    found = {}
    for name, module in list(sys.modules.items()):
        location = getattr(module, "__file__", None)
        if not location or name.startswith("accel_user_") or name in ("__main__", "__mp_main__"):
            continue
        path = Path(location).resolve()
        if not path.is_file():  # namespaces like torch.ops name a file that is not there
            continue
        if (
            any(part in ("site-packages", "dist-packages") for part in path.parts)
            or any(path.is_relative_to(root) for root in skip)
            or path.is_relative_to(accel_root)
        ):
            continue
        found[name] = str(path)
    return found


def start_env(side: Side, config: BenchConfig) -> dict[str, str]:
    """The environment a spawned replicate starts with: the side's settings before torch loads."""
    env = {**os.environ, **dict(side.env), "PYTHONDONTWRITEBYTECODE": "1"}
    if config.threads is not None and "OMP_NUM_THREADS" not in dict(side.env):
        env["OMP_NUM_THREADS"] = str(config.threads)
    return env


def refuse_start_only_env(side: Side) -> None:
    """The fork launcher's child inherits a loaded torch: start-only settings would not apply."""
    late = [k for k, _ in side.env if k.startswith(START_ONLY_PREFIXES)]
    if late:
        raise BenchError(
            f"{', '.join(late)} only take effect at process start, and the fork launcher starts from a "
            "process that has loaded torch",
            "use the spawn launcher (the default) for sides with runtime settings",
        )


def watch_replicate(config: BenchConfig, results: IO[str], report_fd: int | None) -> None:
    """Arm the watchdog in a replicate: a call of the pipeline's code past `config.hang_seconds`
    answers the parent with an error naming the stage (on the protocol stream), writes the stack of
    the stuck call to `report_fd` (the user's stderr), ends the replicate's children and exits 2."""

    def on_hang(hang: watchdog.Hang) -> None:
        if report_fd is not None:  # the stack first: the parent ends this process once it has the answer
            with contextlib.suppress(OSError):
                os.write(
                    report_fd, f"stack of the hung {hang.stage} call (most recent call last):\n{hang.stack}".encode()
                )
        results.write(json.dumps(hang_answer(hang, config.hang_seconds)) + "\n")
        results.flush()

    watchdog.arm(config.budget_seconds, on_hang, limit_seconds=config.hang_seconds)


def hang_answer(hang: watchdog.Hang, limit_seconds: float) -> dict[str, Any]:
    """What a replicate whose stage hung answers its parent."""
    return {
        "ok": False,
        "hung": hang.stage,
        "error": (
            f"the pipeline's {hang.stage} stage has not returned after {hang.seconds:.0f} s in a bench replicate "
            f"(limit {limit_seconds:g} s): taken as hung, the replicate and its children were ended"
        ),
        "hint": f"fix the {hang.stage} (its stack is printed above), or check that one call finishes",
    }
