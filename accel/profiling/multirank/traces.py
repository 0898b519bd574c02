"""Per-rank Kineto traces (torch.profiler, JSON or .json.gz) read into a JobTimeline, in bounded memory.

A trace is read one event at a time (a small streaming reader over json's raw_decode: no trace is
ever loaded whole) and one file at a time; of each rank only per-step and per-collective numbers
are kept: the ProfilerStep#N intervals, the DataLoader __next__ waits, and each collective's
arrival and completion:
- gloo: the `c10d::<op>` call on the rank's thread is the arrival (the call enqueues the work), the
  end of the `gloo:<op>` work on the process group's thread is the completion (the k-th call of an op
  pairs with the k-th work of that op);
- NCCL: the kernel's start is the arrival (the stream reached it), its end the completion.
The rank comes from the trace's distributedInfo (written when the profiler starts after
init_process_group), else from a `rank<N>` worker name in the file name. Ranks on different hosts
have different clocks: each rank's clock is shifted by the median gap between its completions and
rank 0's of the same collectives, which finish together on every rank (ranks on rank 0's host share
its clock and are not shifted).
"""

from __future__ import annotations

import bisect
import dataclasses
import gzip
import json
import re
import statistics
from pathlib import Path
from typing import Any, Iterator, TextIO

from accel.core.errors import PipelineLoadError
from accel.core.progress import Progress, no_progress
from accel.profiling.ranks import CollectiveCall, JobTimeline, RankStep, RankTimeline, matched_calls

# Read this many characters at a time: memory stays near this plus the per-step numbers.
CHUNK_CHARS = 1 << 20
TRACE_PATTERNS = ("*.json", "*.json.gz")
RANK_IN_NAME = re.compile(r"rank[_-]?(\d+)", re.IGNORECASE)
NCCL_KERNEL = re.compile(r"nccl(?:Dev)?Kernel_([A-Za-z]+)")
STEP_PREFIX = "ProfilerStep#"
LOADER_PREFIX = "enumerate(DataLoader)"
CLOCK_ALIGNMENT = "rank 0's host: one clock; other hosts: median gap between their collective completions and rank 0's"
US = 1e-6


class _Reader:
    """A text stream read in chunks; values decoded with json's raw_decode as they complete."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.buffer, self.pos, self.eof = stream, "", 0, False
        self.decoder = json.JSONDecoder()

    def _fill(self) -> bool:
        chunk = self.stream.read(CHUNK_CHARS)
        if not chunk:
            self.eof = True
            return False
        self.buffer = self.buffer[self.pos :] + chunk
        self.pos = 0
        return True

    def peek(self) -> str:
        while True:
            while self.pos < len(self.buffer) and self.buffer[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buffer) or not self._fill():
                return self.buffer[self.pos] if self.pos < len(self.buffer) else ""

    def take(self, expected: str) -> None:
        if self.peek() != expected:
            raise ValueError(f"expected {expected!r} at character {self.pos}")
        self.pos += 1

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError:
                if self._fill():
                    continue
                raise
            # A number at the buffer's end may go on in the next chunk.
            if end < len(self.buffer) or self.eof or not self._fill():
                self.pos = end
                return value


def read_events(stream: TextIO, header: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield the events of a Chrome/Kineto trace one by one; its other top-level keys go to `header`."""
    reader = _Reader(stream)
    reader.take("{")
    while reader.peek() not in ("}", ""):
        key = reader.value()
        reader.take(":")
        if key == "traceEvents":
            reader.take("[")
            while reader.peek() != "]":
                event = reader.value()
                if isinstance(event, dict):
                    yield event
                if reader.peek() == ",":
                    reader.pos += 1
            reader.pos += 1
        else:
            header[key] = reader.value()
        if reader.peek() == ",":
            reader.pos += 1


def _op_key(name: str) -> str:
    """`c10d::allreduce_`, `gloo:all_reduce` and an NCCL AllReduce kernel all become "allreduce"."""
    return name.split(":")[-1].strip("_").replace("_", "").lower()


@dataclasses.dataclass
class RankEvents:
    """What one rank's traces hold that the analysis needs: O(steps + collectives), no op events."""

    steps: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    waits: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    calls: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    works: dict[str, list[tuple[float, float]]] = dataclasses.field(default_factory=dict)
    kernels: list[tuple[str, float, float]] = dataclasses.field(default_factory=list)
    events: int = 0

    def add(self, event: dict[str, Any]) -> None:
        self.events += 1
        if event.get("ph") != "X" or "dur" not in event:
            return
        name, start = str(event.get("name", "")), float(event["ts"]) * US
        end = start + float(event["dur"]) * US
        category = event.get("cat", "")
        if name.startswith(STEP_PREFIX):
            self.steps.append((start, end))
        elif name.startswith(LOADER_PREFIX) and name.endswith("__next__"):
            self.waits.append((start, end))
        elif name.startswith("c10d::") and category == "cpu_op":
            self.calls.setdefault(_op_key(name), []).append(start)
        elif name.startswith("gloo:"):
            self.works.setdefault(_op_key(name), []).append((start, end))
        elif category == "kernel" and (match := NCCL_KERNEL.match(name)):
            self.kernels.append((_op_key(match.group(1)), start, end))

    def collectives(self) -> list[CollectiveCall]:
        if self.kernels:
            return [CollectiveCall(name, start, end) for name, start, end in sorted(self.kernels, key=lambda k: k[1])]
        calls = []
        for name, works in self.works.items():
            arrivals = sorted(self.calls.get(name, []))
            for k, (start, end) in enumerate(sorted(works)):
                arrival = min(arrivals[k], start) if k < len(arrivals) else start
                calls.append(CollectiveCall(name, arrival, max(end, arrival)))
        return sorted(calls, key=lambda c: c.arrival_seconds)

    def timeline(self, rank: int, host: str, shift_seconds: float = 0.0) -> RankTimeline:
        steps = sorted(self.steps)
        starts = [s for s, _ in steps]
        waits = [0.0] * len(steps)
        for start, end in self.waits:
            index = bisect.bisect_right(starts, start) - 1
            if index >= 0 and start <= steps[index][1]:
                waits[index] += end - start
        return RankTimeline(
            rank=rank,
            # A trace has no batch size: no samples, so no rates per sample are made up from it.
            steps=tuple(
                RankStep(s - shift_seconds, e - shift_seconds, min(w, e - s), 0) for (s, e), w in zip(steps, waits)
            ),
            calls=tuple(
                CollectiveCall(c.name, c.arrival_seconds - shift_seconds, c.done_seconds - shift_seconds)
                for c in self.collectives()
            ),
            host=host,
        )


def trace_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise PipelineLoadError(
            f"no such folder: {folder}", "--traces takes the folder the ranks wrote their traces to"
        )
    files = sorted({p for pattern in TRACE_PATTERNS for p in folder.rglob(pattern)})
    if not files:
        raise PipelineLoadError(
            f"no trace files (*.json, *.json.gz) in {folder}",
            "add torch.profiler with tensorboard_trace_handler(DIR, worker_name=f'rank{rank}') to the "
            "training script (docs/multirank.md)",
        )
    return files


def read_rank_file(path: Path, events: RankEvents) -> dict[str, Any]:
    """Stream one trace file into `events`; returns its header (distributedInfo, host_name, ...)."""
    header: dict[str, Any] = {}
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as stream:  # type: ignore[operator]
            for event in read_events(stream, header):
                events.add(event)
    except (ValueError, OSError, EOFError) as exc:
        raise PipelineLoadError(
            f"{path} is not a readable trace: {exc}", "pass a folder of torch.profiler traces"
        ) from exc
    return header


def _rank_of(path: Path, header: dict[str, Any]) -> int:
    info = header.get("distributedInfo") or {}
    if isinstance(info.get("rank"), int):
        return int(info["rank"])
    match = RANK_IN_NAME.search(path.name)
    if match:
        return int(match.group(1))
    raise PipelineLoadError(
        f"{path} does not say which rank wrote it (no distributedInfo, no rank<N> in its name)",
        "start the profiler after init_process_group, or name the worker f'rank{rank}'",
    )


def read_job(folder: Path, progress: Progress = no_progress) -> tuple[JobTimeline, dict[str, Any]]:
    """Every rank's traces in `folder` (one file at a time) as one JobTimeline, clocks aligned."""
    ranks: dict[int, RankEvents] = {}
    hosts: dict[int, str] = {}
    world_sizes = set()
    for path in trace_files(folder):
        progress(f"reading {path.name}")
        events = RankEvents()
        header = read_rank_file(path, events)
        if "schemaVersion" not in header and not events.events:
            continue
        rank = _rank_of(path, header)
        merged = ranks.setdefault(rank, RankEvents())
        merged.steps += events.steps
        merged.waits += events.waits
        merged.kernels += events.kernels
        merged.events += events.events
        for name, starts in events.calls.items():
            merged.calls.setdefault(name, []).extend(starts)
        for name, works in events.works.items():
            merged.works.setdefault(name, []).extend(works)
        hosts[rank] = str(header.get("host_name", ""))
        if isinstance((header.get("distributedInfo") or {}).get("world_size"), int):
            world_sizes.add(header["distributedInfo"]["world_size"])
    expected = max(world_sizes | {max(ranks, default=-1) + 1})
    missing = sorted(set(range(expected)) - set(ranks))
    if len(ranks) < 2 or missing:
        raise PipelineLoadError(
            f"traces of ranks {sorted(ranks)} in {folder}" + (f"; missing ranks {missing}" if missing else ""),
            "a straggler needs the traces of every rank of the job (two or more) in one folder",
        )
    unaligned = JobTimeline(
        ranks=tuple(ranks[r].timeline(r, hosts[r]) for r in sorted(ranks)), source="traces", clock_alignment=""
    )
    shifts = clock_shifts(unaligned)
    job = JobTimeline(
        ranks=tuple(ranks[r].timeline(r, hosts[r], shifts[r]) for r in sorted(ranks)),
        source="traces",
        clock_alignment=CLOCK_ALIGNMENT,
    )
    details = {
        "trace_folder": str(folder),
        "events_read": sum(e.events for e in ranks.values()),
        "clock_shift_seconds": {str(r): s for r, s in shifts.items()},
    }
    return job, details


def clock_shifts(job: JobTimeline) -> dict[int, float]:
    """Per rank, the shift onto rank 0's clock: none on rank 0's host (one clock for its processes);
    on another host, the median of (completion there - rank 0's completion) over matched collectives
    of all that host's ranks."""
    host_of = {t.rank: t.host for t in job.ranks}
    gaps: dict[str, list[float]] = {}
    for group in matched_calls(job):
        reference = group[0][0].done_seconds
        for rank, (call, _) in group.items():
            gaps.setdefault(host_of[rank], []).append(call.done_seconds - reference)
    home = host_of[0]
    return {
        rank: 0.0 if host == home or not gaps.get(host) else statistics.median(gaps[host])
        for rank, host in host_of.items()
    }
