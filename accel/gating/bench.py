"""`accel bench`: per-call latency, throughput, peak memory and counts, from fresh processes.

A process is the unit of noise (memory layout, core placement, CPU frequency and neighbours change
between processes, not between iterations), so each replicate is a new process that loads the
pipeline file, warms up, times calls of the model on one example batch and prints one JSON object.
Two launchers start them: `spawn` runs `python -m accel.gating.worker` (the default, nothing shared
with the parent; a side's environment variables are set at process start, before torch is
imported, so OMP_*, KMP_* and CUDA_* settings take effect), `fork` forks the parent, which has
imported torch but never run it (cheap, for the gate benchmark's hundreds of replicates; it refuses
settings that only work at process start). `inline` measures in this very process: only for
counts, which do not depend on the process (the CI gate of many files at once).

What one replicate measures, and the fingerprint of where: accel.gating.replicate. Each replicate is
set up against noise (pinned cores, fixed threads, no garbage collection while timing) and records
the user modules it imported: accel.gating.process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from accel.core import watchdog
from accel.core.errors import AccelError, BenchError
from accel.gating.process import (  # noqa: F401 - BenchConfig, Side, LAUNCHERS and hang_seconds_for are part of this module's API
    LAUNCHERS,
    BenchConfig,
    Side,
    hang_seconds_for,
    refuse_start_only_env,
    start_env,
    watch_replicate,
)
from accel.gating.replicate import (  # noqa: F401 - environment and environment_mismatch are part of this module's API
    Replicate,
    environment,
    environment_mismatch,
    measure_here,
)

BENCH_SCHEMA = "accel.bench/1"
# A replicate whose worker gives no answer in this long is stuck (a deadlocked pool, a hung file):
# the backstop behind the replicate's own watchdog, which names the stage that hung.
REPLICATE_TIMEOUT_SECONDS = 600.0


def replicate_timeout_seconds(config: BenchConfig) -> float:
    """The backstop for one replicate: never before its own watchdog could have answered (a hang
    limit from a large --budget is past REPLICATE_TIMEOUT_SECONDS)."""
    return max(REPLICATE_TIMEOUT_SECONDS, 2 * config.hang_seconds)


# --- launching replicates ----------------------------------------------------------------------
def run_replicate(side: Side, config: BenchConfig, *, timing: bool = True, counts: bool = False) -> dict[str, Any]:
    """Measure in a fresh process (config.launcher) and return what it measured."""
    if config.launcher == "fork":
        return _run_forked(side, config, timing=timing, counts=counts)
    if config.launcher == "inline":
        if timing:
            raise ValueError("the inline launcher measures counts only: timings need a fresh process")
        with _caller_state_kept():
            return _parse_answer(json.dumps(answer(side, config, timing, counts)), str(side.file))
    return _run_spawned(side, config, timing=timing, counts=counts)


@contextlib.contextmanager
def _caller_state_kept() -> Iterator[None]:
    """Measuring inline changes the working folder, environment, import path, pinning and threads:
    give the caller its own back."""
    cwd, env, threads, path = os.getcwd(), dict(os.environ), torch.get_num_threads(), list(sys.path)
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    try:
        yield
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        sys.path[:] = path
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
        torch.set_num_threads(threads)


def _request(side: Side, config: BenchConfig, timing: bool, counts: bool) -> dict[str, Any]:
    return {
        "file": str(side.file),
        "cwd": str(side.cwd) if side.cwd else None,
        "lock": str(side.lock) if side.lock else None,
        "env": [list(p) for p in side.env],
        "paths": list(side.paths),
        "config": dataclasses.asdict(config),
        "timing": timing,
        "counts": counts,
    }


def request_from_dict(data: dict[str, Any]) -> tuple[Side, BenchConfig, bool, bool]:
    side = Side(
        file=Path(data["file"]),
        cwd=Path(data["cwd"]) if data.get("cwd") else None,
        lock=Path(data["lock"]) if data.get("lock") else None,
        env=tuple((str(k), str(v)) for k, v in data.get("env", [])),
        paths=tuple(str(p) for p in data.get("paths", [])),
    )
    config = dict(data["config"])
    if config.get("cores") is not None:
        config["cores"] = tuple(config["cores"])
    return side, BenchConfig(**config), bool(data["timing"]), bool(data["counts"])


def answer(side: Side, config: BenchConfig, timing: bool, counts: bool, *, apply_env: bool = True) -> dict[str, Any]:
    """What a worker reports: its measurements, or the error that stopped it."""
    try:
        return {"ok": True, **measure_here(side, config, timing=timing, counts=counts, apply_env=apply_env)}
    except AccelError as exc:
        return {"ok": False, "error": exc.message, "hint": exc.hint}
    except Exception as exc:  # noqa: BLE001 - the user's pipeline raised; report it to the parent
        return {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "hint": "run accel profile on the file to see the traceback",
        }


def _parse_answer(text: str, where: str) -> dict[str, Any]:
    lines = [line for line in text.strip().splitlines() if line.startswith("{")]
    if not lines:
        raise BenchError(f"the bench worker for {where} printed no result", "run accel bench --debug to see its output")
    data = json.loads(lines[-1])
    if not data.get("ok"):
        raise BenchError(f"measuring {where} failed: {data.get('error')}", data.get("hint", ""))
    return data


def _run_spawned(side: Side, config: BenchConfig, *, timing: bool, counts: bool) -> dict[str, Any]:
    """Start `python -m accel.gating.worker` in a session of its own and read its answer from a pipe:
    its stdout goes nowhere (a child the pipeline starts may hold it open forever), its chatter to a
    temporary file (the tail of a crash), and its leftover children are ended with its group."""
    request = json.dumps(_request(side, config, timing, counts)).encode()
    read_fd, write_fd = os.pipe()
    report_fd = os.dup(2)
    with tempfile.TemporaryFile() as chatter:
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "accel.gating.worker", str(write_fd), str(report_fd)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=chatter,
                pass_fds=(write_fd, report_fd),
                env=start_env(side, config),
                cwd=side.cwd,
                start_new_session=True,
            )
        finally:
            os.close(write_fd)
            os.close(report_fd)
        watchdog.started_group(process.pid)
        try:
            assert process.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                process.stdin.write(request)
                process.stdin.close()
            text = read_answer(read_fd, process.poll, replicate_timeout_seconds(config))
            code = _finished(process)
        finally:
            os.close(read_fd)
            watchdog.end_group(process.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=WORKER_EXIT_SECONDS)
        if text is None:
            raise BenchError(
                f"a replicate of {side.file} ran past {replicate_timeout_seconds(config):.0f} s",
                "check that the pipeline finishes; accel profile shows where it spends time",
            )
        if not text:
            chatter.seek(0)
            tail = chatter.read().decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise BenchError(
                f"the bench worker for {side.file} exited with {code}: {tail[0]}",
                "run accel profile on the file to see the traceback",
            )
    return _parse_answer(text, str(side.file))


# Seconds a worker gets to exit once it has answered (its interpreter shutting down), before its
# process group is killed.
WORKER_EXIT_SECONDS = 30.0
# How often the parent looks whether a worker that has not answered is still running.
POLL_SECONDS = 0.2


def read_answer(fd: int, exited: Callable[[], int | None], timeout_seconds: float) -> str | None:
    """The first line a worker writes to the pipe `fd`: "" if it exited without one, None if it gave
    none within `timeout_seconds` (a child it started may hold the pipe open after it exited)."""
    deadline = time.monotonic() + timeout_seconds
    received = b""
    while b"\n" not in received:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], min(POLL_SECONDS, left))
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            received += chunk
        elif exited() is not None and not select.select([fd], [], [], 0)[0]:
            break
    return received.decode(errors="replace").split("\n", 1)[0]


def _finished(process: subprocess.Popen) -> int | None:
    try:
        return process.wait(timeout=WORKER_EXIT_SECONDS)
    except subprocess.TimeoutExpired:
        return None


def _run_forked(side: Side, config: BenchConfig, *, timing: bool, counts: bool) -> dict[str, Any]:
    refuse_start_only_env(side)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, write one JSON line, leave without running parent cleanup
        gc.freeze()  # the parent's objects out of this child's collections (no copy-on-write storm)
        os.close(read_fd)
        report_fd = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)  # the profiler's chatter would interleave with the parent's output
        code = 0
        try:
            with os.fdopen(write_fd, "w", buffering=1) as pipe:
                watch_replicate(config, pipe, report_fd)
                pipe.write(json.dumps(answer(side, config, timing, counts)) + "\n")
        except BaseException:  # noqa: BLE001 - nothing may escape a forked child
            code = 1
        os._exit(code)
    os.close(write_fd)

    def exited() -> int | None:
        done, status = os.waitpid(pid, os.WNOHANG)
        return os.waitstatus_to_exitcode(status) if done else None

    try:
        text = read_answer(read_fd, exited, replicate_timeout_seconds(config))
    finally:
        os.close(read_fd)
        watchdog.end_processes([pid])
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)  # no zombie left, whatever end_processes found
    if text is None:
        raise BenchError(
            f"a replicate of {side.file} ran past {replicate_timeout_seconds(config):.0f} s",
            "check that the pipeline finishes; accel profile shows where it spends time",
        )
    return _parse_answer(text, str(side.file))


# --- a whole bench -----------------------------------------------------------------------------
def replicate_values(replicates: Sequence[Replicate], metric: str) -> list[float]:
    """Per-replicate values of a timed metric (latency_seconds, peak_memory_bytes)."""
    if metric == "latency_seconds":
        return [r.median_seconds for r in replicates]
    if metric == "peak_memory_bytes":
        return [float(r.peak_memory_bytes) for r in replicates if r.peak_memory_bytes is not None]
    raise ValueError(f"unknown timed metric {metric!r}")


@dataclasses.dataclass(frozen=True)
class BenchResult:
    """Replicates from fresh processes, the counts, and where they were measured."""

    target: str
    environment: dict[str, Any]
    replicates: tuple[Replicate, ...]
    counts: dict[str, Any] | None
    config: BenchConfig
    schema: str = BENCH_SCHEMA

    def values(self, metric: str) -> list[float]:
        """Per-replicate values of a timed metric (latency_seconds, peak_memory_bytes)."""
        return replicate_values(self.replicates, metric)

    def summary(self) -> dict[str, float]:
        """Medians over replicates: what a table shows."""
        if not self.replicates:
            return {}
        column = lambda name: float(np.median([getattr(r, name) for r in self.replicates]))  # noqa: E731
        data = {
            "median_seconds": column("median_seconds"),
            "p90_seconds": column("p90_seconds"),
            "p99_seconds": column("p99_seconds"),
            "samples_per_s": float(np.median([r.samples_per_s for r in self.replicates])),
        }
        memory = self.values("peak_memory_bytes")
        if memory:
            data["peak_memory_bytes"] = float(np.median(memory))
        return data

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "target": self.target,
            "environment": self.environment,
            "config": dataclasses.asdict(self.config),
            "summary": self.summary(),
            "replicates": [r.to_dict() for r in self.replicates],
            "counts": self.counts,
        }


def bench(
    file: str | os.PathLike,
    lock: str | os.PathLike | None = None,
    config: BenchConfig = BenchConfig(),
    *,
    timing: bool = True,
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Measure a pipeline file in `config.replicates` fresh processes (counts from the first)."""
    from accel.core.loading import check_file

    path = check_file(file)
    side = Side(file=path.resolve(), lock=Path(lock).resolve() if lock else None)
    replicates: list[Replicate] = []
    counts = None
    env: dict[str, Any] = {}
    for index in range(config.replicates if timing else 1):
        if progress:
            progress(f"replicate {index + 1}/{config.replicates}" if timing else "counting")
        data = run_replicate(side, config, timing=timing, counts=index == 0)
        env = data["environment"]
        counts = data.get("counts", counts)
        if timing:
            replicates.append(Replicate.from_dict(data["replicate"]))
    return BenchResult(target=path.name, environment=env, replicates=tuple(replicates), counts=counts, config=config)
