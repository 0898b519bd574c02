"""Peak memory for the memory target, measured the same way on both sides.

In this process a candidate has already run (the guard ran it), so memory a runtime keeps from its
first call (ONNX Runtime's arena) no longer shows as growth, while torch's allocations, returned to
the system after each call, do: ORT would read "x0.00". So each side is rebuilt in a fresh Python
process from the pipeline file and its optimizations' lock entries (artifacts from the work
folder), and its high-water resident memory over its first calls on the example batch, above what
was resident after setup, is the peak (core.measure.peak_rss_in_fresh_process). Pipelines that
are not in a file (built in memory) cannot be rebuilt: they are measured in this process, and the
result says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from accel.core.measure import peak_memory_pair, peak_rss_in_fresh_process

FRESH, IN_PROCESS = "fresh process per side (high-water RSS)", "in this process (tensor memory and RSS growth)"

CHILD = """
import json, sys
from pathlib import Path
import torch
from accel.core.loading import load_pipeline
from accel.core.measure import FRESH_PROCESS_MARK, peak_rss_bytes
from accel.optimizing.lock import LockEntry, apply_entries
spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])
pipeline = load_pipeline(spec["pipeline"])
entries = tuple(LockEntry(e["optimizer"], e["params"], e["state"]) for e in spec["entries"])
pipeline = apply_entries(pipeline, entries, Path(spec["workdir"]) / "accel.lock.yaml")
batch = pipeline.example_batch()
def calls():
    with torch.inference_mode():
        for _ in range(2):
            pipeline.forward(batch)
peak = peak_rss_bytes(calls)
print(FRESH_PROCESS_MARK, peak if peak is not None else "none")
"""


class MemoryMeter:
    """Peak bytes of (baseline, candidate), fresh process per side when both can be rebuilt."""

    def __init__(self, pipeline_path: Path | None, workdir: Path) -> None:
        self.pipeline_path = pipeline_path
        self.workdir = workdir
        self._fresh: dict[str, int | None] = {}
        self.how = IN_PROCESS

    def _fresh_peak(self, choices: tuple[Any, ...]) -> int | None:
        entries = [{"optimizer": c.optimizer, "params": c.params, "state": c.state} for c in choices]
        spec = json.dumps(
            {
                "pipeline": str(self.pipeline_path),
                "entries": entries,
                "workdir": str(self.workdir),
                "threads": torch.get_num_threads(),
            },
            default=str,
        )
        if spec not in self._fresh:
            self._fresh[spec] = peak_rss_in_fresh_process(CHILD, [spec])
        return self._fresh[spec]

    def pair(
        self,
        baseline: tuple[Callable[[], Any], tuple[Any, ...]],
        candidate: tuple[Callable[[], Any], tuple[Any, ...]],
    ) -> tuple[int, int]:
        """(call, chosen optimizations) of each side -> their peak bytes."""
        if self.pipeline_path is not None:
            base, peak = self._fresh_peak(baseline[1]), self._fresh_peak(candidate[1])
            if base is not None and peak is not None:
                self.how = FRESH
                return base, peak
        self.how = IN_PROCESS
        return peak_memory_pair(baseline[0], candidate[0])
