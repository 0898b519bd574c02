"""Lockstep process pairs: the two sides of an `--against` gate alive at once, timed call by call.

Two fresh processes (one per side) load their pipeline and warm up; then the parent asks them for
one timed call at a time, alternating A B B A A B ..., until the timing budget is spent. Each
call of one side runs a few milliseconds from a call of the other, so the load of neighbours,
frequency changes and thermal drift hit both sides alike, and the other side waits idle (blocked
on a pipe) while one is timed. On this 2-core machine under a load of 6 the per-pair A/A spread
of a 2 ms model fell from about 8% (processes one after another) to about 1.5% this way. The
process pair remains the unit of noise that memory layout and core placement make, so the gate
still takes several pairs.

The protocol runs over two pipes given as file descriptors (not stdout, which the user's code may
print to): the parent writes one line per request (`call`, then `done`), the worker answers one
line each (a JSON object when ready and when done, the seconds of a timed call otherwise).
"""

from __future__ import annotations

import gc
import json
import os
import select
import subprocess
import sys
from typing import Any, Sequence

import numpy as np

from accel.core import watchdog
from accel.core.errors import AccelError, BenchError
from accel.core.measure import device_sync, now, peak_memory_bytes
from accel.gating.bench import REPLICATE_TIMEOUT_SECONDS, BenchConfig, Side, _request
from accel.gating.process import (
    collector_off,
    load_side,
    refuse_start_only_env,
    start_env,
    user_modules,
    watch_replicate,
)
from accel.gating.replicate import Replicate, environment


# --- the worker side -----------------------------------------------------------------------------
def serve(
    side: Side, config: BenchConfig, command_fd: int, result_fd: int, *, apply_env: bool, report_fd: int | None = None
) -> None:
    """Load, warm up, say ready, then time one call per `call` line until `done`. A call past
    `config.hang_seconds` answers with the hung stage instead and ends this worker."""
    import torch

    from accel.core.pipeline import batch_length

    commands = os.fdopen(command_fd, "r")
    results = os.fdopen(result_fd, "w", buffering=1)
    watch_replicate(config, results, report_fd)
    try:
        pipeline = load_side(side, config, apply_env=apply_env)
        batch = pipeline.example_batch()
        sync = device_sync("cuda" if torch.cuda.is_available() else None)

        def call() -> Any:
            with torch.inference_mode():
                return pipeline.forward(batch)

        for _ in range(max(config.warmup_calls, 1)):
            call()
        sync()
        results.write(json.dumps({"ok": True, "ready": True}) + "\n")
        with collector_off():
            for line in commands:
                if line.strip() != "call":
                    break
                started = now()
                call()
                sync()
                results.write(f"{now() - started!r}\n")
        peak = peak_memory_bytes(call, "cuda" if torch.cuda.is_available() else None) if config.memory else None
        results.write(
            json.dumps(
                {
                    "ok": True,
                    "environment": environment(),
                    "modules": user_modules(),
                    "pid": os.getpid(),
                    "batch_samples": batch_length(batch),
                    "peak_memory_bytes": peak,
                }
            )
            + "\n"
        )
    except AccelError as exc:
        results.write(json.dumps({"ok": False, "error": exc.message, "hint": exc.hint}) + "\n")
    except Exception as exc:  # noqa: BLE001 - the user's pipeline raised; report it to the parent
        results.write(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}", "hint": ""}) + "\n")


# --- the parent side -----------------------------------------------------------------------------
class LiveSide:
    """One side's worker process, started and answering calls."""

    def __init__(self, side: Side, config: BenchConfig) -> None:
        self.side = side
        command_read, self._command = os.pipe()
        self._result, result_write = os.pipe()
        self._process: subprocess.Popen | None = None
        self._pid: int | None = None
        if config.launcher == "fork":
            refuse_start_only_env(side)
            pid = os.fork()
            if pid == 0:  # the child: serve, then leave without running the parent's cleanup
                # The parent's objects stay out of this child's collections: traversing them would
                # copy every shared page (copy-on-write) and triple the cost of Python-heavy calls.
                gc.freeze()
                os.close(self._command)
                os.close(self._result)
                report_fd = os.dup(2)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                code = 0
                try:
                    serve(side, config, command_read, result_write, apply_env=True, report_fd=report_fd)
                except BaseException:  # noqa: BLE001 - nothing may escape a forked child
                    code = 1
                os._exit(code)
            self._pid = pid
        else:
            report_fd = os.dup(2)
            try:
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "accel.gating.worker", "--live"]
                    + [str(command_read), str(result_write), str(report_fd)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    pass_fds=(command_read, result_write, report_fd),
                    env=start_env(side, config),
                    cwd=side.cwd,
                    text=True,
                    start_new_session=True,  # its own group: the children its pipeline leaves are ended with it
                )
            finally:
                os.close(report_fd)
            watchdog.started_group(self._process.pid)
            assert self._process.stdin is not None
            self._process.stdin.write(json.dumps(_request(side, config, True, False)) + "\n")
            self._process.stdin.close()
        os.close(command_read)
        os.close(result_write)
        self._commands = os.fdopen(self._command, "w", buffering=1)
        self._results = os.fdopen(self._result, "r")

    def _answer(self) -> str:
        ready, _, _ = select.select([self._results], [], [], REPLICATE_TIMEOUT_SECONDS)
        line = self._results.readline() if ready else ""
        if not line:
            raise BenchError(
                f"the bench worker for {self.side.file} stopped answering",
                "check that the pipeline finishes; accel profile shows where it spends time",
            )
        return line

    def message(self) -> dict[str, Any]:
        data = json.loads(self._answer())
        if not data.get("ok"):
            raise BenchError(f"measuring {self.side.file} failed: {data.get('error')}", data.get("hint", ""))
        return data

    def call(self) -> float:
        self._commands.write("call\n")
        line = self._answer()
        if line.startswith("{"):  # a call that hung, or raised: the worker's error
            data = json.loads(line)
            raise BenchError(f"measuring {self.side.file} failed: {data.get('error')}", data.get("hint", ""))
        return float(line)

    def finish(self) -> dict[str, Any]:
        self._commands.write("done\n")
        return self.message()

    def close(self) -> None:
        for stream in (self._commands, self._results):
            try:
                stream.close()
            except OSError:
                pass
        if self._process is not None:
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            watchdog.end_group(self._process.pid)
        elif self._pid is not None:
            os.waitpid(self._pid, 0)


def _replicate(seconds: Sequence[float], final: dict[str, Any]) -> Replicate:
    data = np.asarray(seconds, dtype=float)
    median = float(np.median(data))
    p90 = max(float(np.percentile(data, 90)), median)
    return Replicate(
        median_seconds=median,
        p90_seconds=p90,
        p99_seconds=max(float(np.percentile(data, 99)), p90),
        calls=int(data.size),
        batch_samples=int(final["batch_samples"]),
        peak_memory_bytes=final.get("peak_memory_bytes"),
    )


def lockstep_pair(
    baseline: Side, candidate: Side, config: BenchConfig, index: int = 0
) -> tuple[Replicate, Replicate, tuple[dict[str, Any], dict[str, Any]]]:
    """One process pair timed call by call: (baseline, candidate, what each worker reported)."""
    sides = (baseline, candidate) if index % 2 == 0 else (candidate, baseline)
    live = []
    try:
        for side in sides:  # started in alternating order, so neither always loads under the other's warm-up
            live.append(LiveSide(side, config))
        for worker in live:
            worker.message()  # ready
        got: list[list[float]] = [[], []]
        began = now()
        turn = 0
        while True:
            order = (0, 1) if turn % 2 == 0 else (1, 0)
            for which in order:
                got[which].append(live[which].call())
            turn += 1
            calls = len(got[0])
            if calls >= config.max_calls or (calls >= config.min_calls and now() - began >= config.budget_seconds):
                break
        finals = [worker.finish() for worker in live]
    finally:
        for worker in live:
            worker.close()
    first, second = _replicate(got[0], finals[0]), _replicate(got[1], finals[1])
    if index % 2 == 0:
        return first, second, (finals[0], finals[1])
    return second, first, (finals[1], finals[0])
