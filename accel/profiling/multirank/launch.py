"""Launch a script under torchrun with accel's timing in each rank, and collect what each wrote.

`python -m torch.distributed.run --standalone --nproc-per-node N -m accel.profiling.multirank.rank
SCRIPT ARGS`: a free rendezvous port, no restarts, so a failing rank ends the job. torchrun starts
each rank in its own session; when the job ends early (a rank crashed, a timeout, Ctrl-C) torchrun
is asked to stop its ranks (SIGTERM), then killed, and any rank process still alive is killed by the
pid it wrote at start: no rank outlives the call.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from accel.core import watchdog
from accel.core.errors import PipelineError, PipelineLoadError
from accel.core.io import cache_root
from accel.core.loading import Script
from accel.core.machine import usable_cores
from accel.profiling.multirank.rank import ENV_OUT, ENV_TRACE

RANK_MODULE = "accel.profiling.multirank.rank"
# How long torchrun gets to stop its ranks after SIGTERM before it is killed.
STOP_GRACE_SECONDS = 10.0
# How often torchrun checks its ranks: a crash is noticed (and the others stopped) this fast.
MONITOR_INTERVAL_SECONDS = 0.1
LOG_TAIL_LINES = 5

Warn = Callable[[str], None]


def cores_warning(nproc: int, cores: int) -> str | None:
    if nproc <= cores:
        return None
    return (
        f"{nproc} ranks on {cores} cores: the ranks take turns on the cores, so their step times include "
        f"waiting for a core and the verdict may name the scheduler, not the script "
        f"(use --nproc-per-node {cores} or fewer)"
    )


def torchrun_command(script: Script, nproc: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "--max-restarts=0",
        f"--monitor-interval={MONITOR_INTERVAL_SECONDS}",
        "-m",
        RANK_MODULE,
        str(script.path.resolve()),
        *script.args,
    ]


def launch(
    script: Script,
    nproc: int,
    *,
    trace_dir: Path | None = None,
    timeout_seconds: float | None = None,
    warn: Warn = lambda message: None,
) -> list[dict[str, Any]]:
    """Run the script on `nproc` local ranks; the result each rank wrote, by rank.

    A rank that failed becomes a PipelineError naming it and its error (the first to fail, by wall
    clock: the others' errors are often the broken connection to it).
    """
    if nproc < 1:
        raise PipelineLoadError(f"--nproc-per-node must be 1 or more, got {nproc}", "pass the number of local ranks")
    warning = cores_warning(nproc, usable_cores())
    if warning:
        warn(warning)
    log_path = cache_root() / "multirank" / f"{script.path.stem}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="accel-ranks-") as out:
        out_dir = Path(out)
        env = dict(os.environ, **{ENV_OUT: str(out_dir), ENV_TRACE: str(trace_dir.resolve()) if trace_dir else ""})
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                torchrun_command(script, nproc), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            watchdog.started_group(process.pid)  # its own session: a hang or a signal ends it from there too
            try:
                code = process.wait(timeout=timeout_seconds)
            except subprocess.TimeoutExpired as exc:
                raise PipelineError(
                    f"{script.path.name} did not finish within {timeout_seconds:.0f} s on {nproc} ranks",
                    "every rank was stopped; give the script fewer steps (pass its arguments after --)",
                ) from exc
            finally:
                stop(process)
                stop_ranks(out_dir)
                watchdog.finished_group(process.pid)
        results = read_results(out_dir)
    failed = [r for r in results if r.get("error")]
    if failed:
        first = min(failed, key=lambda r: r["error"]["wall_time"])
        raise PipelineError(
            f"rank {first['rank']} failed: {first['error']['message']}",
            f"the other ranks were stopped; the ranks' output is in {log_path}",
        )
    if code != 0 or len(results) != nproc:
        raise PipelineError(
            f"torchrun exited with status {code} and {len(results)} of {nproc} ranks reported: {_tail(log_path)}",
            f"the ranks' output is in {log_path}",
        )
    return sorted(results, key=lambda r: r["rank"])


def stop(process: subprocess.Popen) -> None:
    """Ask torchrun (and so its ranks) to stop, then kill its process group if it does not."""
    if process.poll() is not None:
        return
    with _quietly():
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        with _quietly():
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def stop_ranks(out_dir: Path) -> None:
    """Kill every rank that wrote its pid and is still running this module (not a reused pid)."""
    for pid_file in out_dir.glob("rank*.pid"):
        with _quietly():
            pid = int(pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if RANK_MODULE.encode() in cmdline:
                os.kill(pid, signal.SIGKILL)


def read_results(out_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out_dir.glob("rank*.json"))]


def _tail(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return " | ".join(lines[-LOG_TAIL_LINES:]) or "no output"


def _quietly() -> contextlib.suppress:
    """Ignore a process that is already gone, or a pid file that is not readable."""
    return contextlib.suppress(OSError, ValueError)
