"""`python -m accel.optimizing.fresh_child MODE SPEC`: one side of a comparison, in a fresh process.

The pipeline is rebuilt from its file and its optimizations' lock entries (as the production
process applying the lock does), then measured one way and reported on one stdout line:

- `time` (optimizing.fresh.FreshTimer): warmed up, timed for a few seconds with core.measure's
  timer; prints TIMING_MARK and JSON holding the median, the timed calls and the minor page faults
  per call.
- `peak-rss` (recipes.memory.MemoryMeter): the high-water resident memory of two calls on the
  example batch above what was resident after setup; prints core.measure.FRESH_PROCESS_MARK and
  the bytes (or "none" where they cannot be measured).

SPEC is JSON: the pipeline file, the entries (optimizer, params, state), the lock file the
artifacts are read beside, the thread count, and for `time` the target and the seconds.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from accel.core.allocator import minor_faults
from accel.core.loading import load_pipeline
from accel.core.measure import FRESH_PROCESS_MARK, peak_rss_bytes, time_calls
from accel.core.pipeline import Pipeline
from accel.optimizing.fresh import TIMING_MARK
from accel.optimizing.lock import LockEntry, apply_entries
from accel.optimizing.search.measuring import Measurer

# Untimed calls before the timed ones (lazy setup, allocator warm-up); at least 3 timed calls (a
# throughput pass is one call), at most 500 (a fast call would otherwise fill the seconds).
WARMUP_CALLS, MIN_CALLS, MAX_CALLS = 2, 3, 500
PEAK_CALLS = 2


def rebuild(spec: dict[str, Any]) -> Pipeline:
    """The pipeline in the spec's file with its lock entries applied, under its thread count."""
    torch.set_num_threads(spec["threads"])
    pipeline = load_pipeline(spec["pipeline"])
    entries = tuple(LockEntry(e["optimizer"], e["params"], e["state"]) for e in spec["entries"])
    return apply_entries(pipeline, entries, Path(spec["lock"]))


def timing(pipeline: Pipeline, spec: dict[str, Any]) -> dict[str, Any]:
    """Median seconds of the target's call, the timed calls, and the median minor page faults of
    one call after the first: the steady state. A mean let a thread's arena that grows over the
    second or third call count against every call of a short run."""
    call = Measurer(pipeline, spec["target"]).call(pipeline)
    call()
    faults: list[int] = []

    def counted() -> None:
        before = minor_faults()
        call()
        faults.append(minor_faults() - before)

    measured = time_calls(
        counted,
        warmup=WARMUP_CALLS - 1,
        min_repeats=MIN_CALLS,
        max_repeats=MAX_CALLS,
        budget_seconds=spec["seconds"],
    )
    return {
        "median": measured.median,
        "calls": measured.count,
        "faults_per_call": float(statistics.median(faults)),
    }


def peak_rss(pipeline: Pipeline) -> int | None:
    """High-water resident bytes of PEAK_CALLS calls on the example batch, above the setup's."""
    batch = pipeline.example_batch()

    def calls() -> None:
        with torch.inference_mode():
            for _ in range(PEAK_CALLS):
                pipeline.forward(batch)

    return peak_rss_bytes(calls)


def main(argv: list[str]) -> int:
    mode, spec = argv[0], json.loads(argv[1])
    pipeline = rebuild(spec)
    if mode == "time":
        print(TIMING_MARK, json.dumps(timing(pipeline, spec)))
    elif mode == "peak-rss":
        peak = peak_rss(pipeline)
        print(FRESH_PROCESS_MARK, peak if peak is not None else "none")
    else:
        raise SystemExit(f"unknown mode {mode!r}: time or peak-rss")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
