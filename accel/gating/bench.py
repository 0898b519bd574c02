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

Each replicate is set up against noise (pinned cores, fixed threads, no garbage collection while
timing) and records the user modules it imported: accel.gating.process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from accel._version import __version__
from accel.core.errors import AccelError, BenchError
from accel.core.machine import cpu_model_name, usable_cores
from accel.gating.process import (  # noqa: F401 - BenchConfig, Side and LAUNCHERS are part of this module's API
    LAUNCHERS,
    BenchConfig,
    Side,
    collector_off,
    load_side,
    refuse_start_only_env,
    start_env,
    user_modules,
)

BENCH_SCHEMA = "accel.bench/1"
# A replicate whose worker gives no answer in this long is stuck (a deadlocked pool, a hung file).
REPLICATE_TIMEOUT_SECONDS = 600.0


@dataclasses.dataclass(frozen=True)
class Replicate:
    """One fresh process's measurements (seconds per call of the model on one batch)."""

    median_seconds: float
    p90_seconds: float
    p99_seconds: float
    calls: int
    batch_samples: int
    peak_memory_bytes: int | None = None
    first_call_seconds: float | None = None

    def __post_init__(self) -> None:
        if not (0 <= self.median_seconds <= self.p90_seconds <= self.p99_seconds):
            raise ValueError("Replicate: need 0 <= median <= p90 <= p99 seconds")

    @property
    def samples_per_s(self) -> float:
        return self.batch_samples / self.median_seconds if self.median_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "samples_per_s": self.samples_per_s}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Replicate":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def environment() -> dict[str, Any]:
    """The fingerprint of where numbers were measured; timings compare only within one."""
    env: dict[str, Any] = {
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cpu_model": cpu_model_name(),
        "cores": usable_cores(),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "accel_version": __version__,
        "python_version": platform.python_version(),
        "platform": platform.system().lower(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = props.name
        env["gpu_memory_bytes"] = int(props.total_memory)
        env.update(_gpu_clocks())
    return env


def _gpu_clocks() -> dict[str, Any]:
    """SM clock, its maximum and throttle reasons from nvidia-smi, when it is there."""
    query = "clocks.sm,clocks.max.sm,clocks_throttle_reasons.active"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits", "-i", "0"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    parts = [p.strip() for p in out.split(",")]
    if len(parts) != 3:
        return {}
    return {"gpu_sm_clock_mhz": parts[0], "gpu_max_sm_clock_mhz": parts[1], "gpu_throttle_reasons": parts[2]}


# Fields that must match for timings to be comparable; counts are machine-independent.
TIMING_FINGERPRINT = ("device", "cpu_model", "cores", "threads", "torch_version", "gpu")


def environment_mismatch(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The fingerprint fields that differ, as 'field: stored != current'."""
    return [
        f"{key}: {stored.get(key)!r} != {current.get(key)!r}"
        for key in TIMING_FINGERPRINT
        if stored.get(key) != current.get(key)
    ]


# --- one replicate (runs inside the fresh process) ---------------------------------------------
def measure_here(
    side: Side, config: BenchConfig, *, timing: bool = True, counts: bool = False, apply_env: bool = True
) -> dict[str, Any]:
    """Load the pipeline in this process and measure it; returns plain JSON-ready data."""
    from accel.core.measure import device_sync, peak_memory_bytes, time_calls
    from accel.core.pipeline import batch_length

    pipeline = load_side(side, config, apply_env=apply_env)
    batch = pipeline.example_batch()
    device = "cuda" if torch.cuda.is_available() else None

    def call() -> Any:
        with torch.inference_mode():
            return pipeline.forward(batch)

    result: dict[str, Any] = {"environment": environment(), "pid": os.getpid(), "modules": user_modules()}
    if timing:
        # target half-width 0: never stop early, spend the budget, so every replicate is alike.
        with collector_off():
            measured = time_calls(
                call,
                warmup=config.warmup_calls,
                min_repeats=config.min_calls,
                max_repeats=config.max_calls,
                budget_seconds=config.budget_seconds,
                target_relative_half_width=0.0,
                sync=device_sync(device),
            )
        peak = peak_memory_bytes(call, device) if config.memory else None
        result["replicate"] = Replicate(
            median_seconds=measured.median,
            p90_seconds=max(measured.p90, measured.median),
            p99_seconds=max(measured.p99, measured.p90, measured.median),
            calls=measured.count,
            batch_samples=batch_length(batch),
            peak_memory_bytes=peak,
            first_call_seconds=measured.first_call_seconds,
        ).to_dict()
    if counts:
        # Counted outside inference_mode: under it matmuls reach the dispatcher in a form the
        # FLOP formulas do not see.
        result["counts"] = count_work(lambda: pipeline.forward(batch), pipeline.model)
    return result


def count_work(call: Callable[[], Any], model: Any) -> dict[str, Any]:
    """Machine-independent counts of one call (accel.core.counts), plus the model's parameter bytes."""
    from accel.core.counts import count_forward, parameter_bytes

    module = model if isinstance(model, torch.nn.Module) else None
    counted = count_forward(call, module).to_dict()
    data = {
        key: counted[key]
        for key in ("flops", "bytes_moved", "op_count", "kernel_launches")
        if counted.get(key) is not None
    }
    data["parameter_bytes"] = parameter_bytes(module) if module is not None else 0
    if torch.cuda.is_available() and "kernel_launches" not in data:
        data["kernel_launches"] = count_kernel_launches(call)
    return data


def count_kernel_launches(call: Callable[[], Any]) -> int:
    """Device activities (kernels, copies, memsets) one call puts on the GPU, from torch.profiler."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    call()  # lazy initialization (cuBLAS handles, autotuning) is not the steady state
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize()
    return sum(1 for event in prof.events() if event.device_type == DeviceType.CUDA)


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
