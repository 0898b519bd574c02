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
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from accel.core.errors import AccelError, BenchError
from accel.gating.process import (  # noqa: F401 - BenchConfig, Side and LAUNCHERS are part of this module's API
    LAUNCHERS,
    BenchConfig,
    Side,
    refuse_start_only_env,
    start_env,
)
from accel.gating.replicate import (  # noqa: F401 - environment and environment_mismatch are part of this module's API
    Replicate,
    environment,
    environment_mismatch,
    measure_here,
)

BENCH_SCHEMA = "accel.bench/1"
# A replicate whose worker gives no answer in this long is stuck (a deadlocked pool, a hung file).
REPLICATE_TIMEOUT_SECONDS = 600.0


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
    request = json.dumps(_request(side, config, timing, counts))
    env = start_env(side, config)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "accel.gating.worker"],
            input=request,
            capture_output=True,
            text=True,
            timeout=REPLICATE_TIMEOUT_SECONDS,
            env=env,
            cwd=side.cwd,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(
            f"a replicate of {side.file} ran past {REPLICATE_TIMEOUT_SECONDS:.0f} s",
            "check that the pipeline finishes; accel profile shows where it spends time",
        ) from exc
    if done.returncode != 0 and "{" not in done.stdout:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise BenchError(
            f"the bench worker for {side.file} exited with {done.returncode}: {tail[0]}",
            "run accel profile on the file to see the traceback",
        )
    return _parse_answer(done.stdout, str(side.file))


def _run_forked(side: Side, config: BenchConfig, *, timing: bool, counts: bool) -> dict[str, Any]:
    refuse_start_only_env(side)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, write one JSON line, leave without running parent cleanup
        gc.freeze()  # the parent's objects out of this child's collections (no copy-on-write storm)
        os.close(read_fd)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)  # the profiler's chatter would interleave with the parent's output
        code = 0
        try:
            with os.fdopen(write_fd, "w") as pipe:
                pipe.write(json.dumps(answer(side, config, timing, counts)) + "\n")
        except BaseException:  # noqa: BLE001 - nothing may escape a forked child
            code = 1
        os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
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
