"""Speed measured in fresh processes, for what changes a whole process (its malloc's thresholds).

Such a setting cannot be timed against its absence in one process: it holds for both sides, and a
process that has run with it cannot go back to the state it had. So each side is rebuilt in a new
Python process (the child program accel.optimizing.fresh_child) from the pipeline file and its
optimizations' lock entries, as the production process applying the lock does, warmed up, and
timed for a few seconds by core.measure's timer; its median is one sample. The sides alternate (A B, B A, ...) so a machine's drift hits both alike, and the speedup is the
ratio of the medians of the per-process medians with a bootstrap interval over the pairs. Each
child also reports its minor page faults per call: the evidence for the allocator's cure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable

import torch

from accel.core.allocator import ENVIRONMENT
from accel.core.measure import Comparison, Measurement, now
from accel.core.stats import paired_ratio_ci

TIMING_MARK = "accel-fresh-timing:"
# The child program (run by name: importing it here would import the recipes package).
CHILD_MODULE = "accel.optimizing.fresh_child"
MIN_PAIRS, MAX_PAIRS = 3, 8
# Seconds of timed calls per process, after the warm-up.
CHILD_SECONDS = 1.0
CHILD_TIMEOUT_SECONDS = 300.0


def child_spec(pipeline: Path, entries: Iterable[Any], lock: Path, **extra: Any) -> str:
    """The JSON argument of the child program: the pipeline file, its entries (objects with
    optimizer, params, state), the lock file their artifacts are read beside, this process's
    thread count, and what the mode needs (`extra`)."""
    return json.dumps(
        {
            "pipeline": str(pipeline),
            "entries": [{"optimizer": e.optimizer, "params": e.params, "state": e.state} for e in entries],
            "lock": str(lock),
            "threads": torch.get_num_threads(),
            **extra,
        },
        default=str,
    )


@dataclasses.dataclass(frozen=True)
class FreshComparison:
    comparison: Comparison
    processes: int  # a side
    faults_per_call: tuple[float, float]  # (baseline, candidate): medians over their processes

    def notes(self) -> dict[str, Any]:
        return {
            "timed_in": f"fresh processes, {self.processes} a side",
            "faults_per_call": {
                "before": round(self.faults_per_call[0], 1),
                "after": round(self.faults_per_call[1], 1),
            },
        }


class FreshTimer:
    """Times (baseline entries, candidate entries) of one pipeline file in fresh processes."""

    def __init__(self, pipeline_path: Path | None, lock_target: Path, target: str) -> None:
        self.pipeline_path = pipeline_path
        self.lock_target = lock_target
        self.target = target

    def run(self, entries: Iterable[Any], lock_target: Path | None = None) -> dict[str, Any]:
        """One fresh process: the pipeline with `entries` (objects with optimizer, params, state),
        their artifacts read beside `lock_target` (default: the timer's)."""
        if self.pipeline_path is None:
            raise RuntimeError("the pipeline was built in memory: it cannot be rebuilt in a fresh process")
        spec = child_spec(
            self.pipeline_path, entries, lock_target or self.lock_target, target=self.target, seconds=CHILD_SECONDS
        )
        # Each side starts from glibc's defaults: whatever pins the allocator is in its entries.
        env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
        try:
            done = subprocess.run(
                [sys.executable, "-m", CHILD_MODULE, "time", spec],
                capture_output=True,
                text=True,
                env=env,
                timeout=CHILD_TIMEOUT_SECONDS,
            )
        except subprocess.TimeoutExpired as exc:  # run() kills the child before raising
            raise RuntimeError(f"a fresh process ran past {CHILD_TIMEOUT_SECONDS:.0f} s") from exc
        for line in done.stdout.splitlines():
            if line.startswith(TIMING_MARK) and done.returncode == 0:
                return dict(json.loads(line[len(TIMING_MARK) :]))
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the fresh process failed (exit {done.returncode}): {last[:200]}")

    def compare(
        self,
        baseline: Iterable[Any],
        candidate: Iterable[Any],
        budget_seconds: float,
        locks: tuple[Path | None, Path | None] = (None, None),
    ) -> FreshComparison:
        """Alternating pairs of processes: at least MIN_PAIRS, more while the budget lasts. `locks`:
        where each side's artifacts are, when not beside the timer's lock target."""
        sides = (tuple(baseline), tuple(candidate))
        runs: tuple[list[dict], list[dict]] = ([], [])
        began = now()
        for pair in range(MAX_PAIRS):
            if pair >= MIN_PAIRS and now() - began >= budget_seconds:
                break
            for side in (0, 1) if pair % 2 == 0 else (1, 0):
                runs[side].append(self.run(sides[side], locks[side]))
        medians = [[r["median"] for r in side] for side in runs]
        ratio, ci = paired_ratio_ci(medians[0], medians[1])
        comparison = Comparison(
            baseline=Measurement(tuple(medians[0])),
            candidate=Measurement(tuple(medians[1])),
            speedup=ratio,
            speedup_ci=ci,
        )
        faults = tuple(float(sorted(r["faults_per_call"] for r in side)[len(side) // 2]) for side in runs)
        return FreshComparison(comparison, len(runs[0]), (faults[0], faults[1]))
