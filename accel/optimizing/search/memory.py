"""Peak memory for the memory target, measured the same way on both sides.

In this process a candidate has already run (the guard ran it), so memory a runtime keeps from its
first call (ONNX Runtime's arena) no longer shows as growth, while torch's allocations, returned to
the system after each call, do: ORT would read "x0.00". So each side is rebuilt in a fresh Python
process (the child program accel.optimizing.fresh_child, mode peak-rss) from the pipeline file and
its optimizations' lock entries (artifacts from the work folder), and its high-water resident memory over its first calls on the example batch, above what
was resident after setup, is the peak (core.measure.peak_rss_in_fresh_process). Pipelines that
are not in a file (built in memory) cannot be rebuilt: they are measured in this process, and the
result says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from accel.core.measure import peak_memory_pair, peak_rss_in_fresh_process
from accel.optimizing.fresh import CHILD_MODULE, child_spec

FRESH, IN_PROCESS = "fresh process per side (high-water RSS)", "in this process (tensor memory and RSS growth)"


class MemoryMeter:
    """Peak bytes of (baseline, candidate), fresh process per side when both can be rebuilt."""

    def __init__(self, pipeline_path: Path | None, workdir: Path) -> None:
        self.pipeline_path = pipeline_path
        self.workdir = workdir
        self._fresh: dict[str, int | None] = {}
        self.how = IN_PROCESS

    def _fresh_peak(self, pipeline_path: Path, choices: tuple[Any, ...]) -> int | None:
        spec = child_spec(pipeline_path, choices, self.workdir / "accel.lock.yaml")
        if spec not in self._fresh:
            self._fresh[spec] = peak_rss_in_fresh_process(CHILD_MODULE, ["peak-rss", spec])
        return self._fresh[spec]

    def pair(
        self,
        baseline: tuple[Callable[[], Any], tuple[Any, ...]],
        candidate: tuple[Callable[[], Any], tuple[Any, ...]],
    ) -> tuple[int, int]:
        """(call, chosen optimizations) of each side -> their peak bytes."""
        path = self.pipeline_path
        if path is not None:
            base, peak = self._fresh_peak(path, baseline[1]), self._fresh_peak(path, candidate[1])
            if base is not None and peak is not None:
                self.how = FRESH
                return base, peak
        self.how = IN_PROCESS
        return peak_memory_pair(baseline[0], candidate[0])
