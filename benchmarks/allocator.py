"""`python -m benchmarks allocator`: how much a CPU pipeline's speed depends on glibc malloc's state.

glibc returns freed memory at the top of its heap to the kernel once it exceeds a trim threshold
(128 KiB, raised on the fly), and serves large blocks with mmap below an mmap threshold that also
moves. A pipeline that frees and re-allocates its activations every call can then pay fresh page
faults (the kernel zeroing pages) on each call, or not, depending on what the process allocated
before.
`accel optimize` compares a candidate against the best interleaved, in one process, so both sides
share that state; this benchmark measures what the state itself costs, where only fresh processes
can: each pipeline timed in new processes with glibc's defaults and with both thresholds pinned
(`MALLOC_TRIM_THRESHOLD_`, `MALLOC_MMAP_THRESHOLD_`, read by glibc at start), alternated, the ratio
of the medians with its 95% interval over the pairs, with the minor page faults per call and the
peak resident memory (what pinning costs: freed memory stays in the process).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = (
    "examples/conv_net.py",
    "examples/wide_mlp.py",
    "tests/real/resnet_classifier.py",
    "tests/real/vit_classifier.py",
    "tests/real/bert_padded.py",
)
# glibc's tunables by environment (mallopt(3)): never trim below 1 GiB, mmap only blocks of 32 MiB+.
STEADY_ENV = {"MALLOC_TRIM_THRESHOLD_": str(1 << 30), "MALLOC_MMAP_THRESHOLD_": str(32 << 20)}
ROUNDS = 6  # pairs of fresh processes per pipeline, the order alternating
CHILD_SECONDS = 3.0  # timed calls per process, after a warm-up


def child(file: str, seconds: float) -> None:
    import torch

    import accel
    from accel.optimizing.search.measuring import Measurer

    pipeline = accel.load(file)
    call = Measurer(pipeline, "latency").call(pipeline)
    for _ in range(3):
        call()
    times: list[float] = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    times.sort()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "median": times[len(times) // 2],
                "faults": faults / len(times),
                "peak_kib": peak_kib,
                "threads": torch.get_num_threads(),
            }
        )
    )


def _run(file: str, steady: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in STEADY_ENV}
    if steady:
        env.update(STEADY_ENV)
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.allocator", "--child", file, str(CHILD_SECONDS)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    from accel.core.stats import paired_ratio_ci

    header = ["pipeline", "glibc defaults", "thresholds pinned", "speedup [95% CI]", "faults/call", "peak RSS"]
    rows = []
    for file in PIPELINES:
        if not (ROOT / file).is_file():
            print(f"skipped {file}: missing")
            continue
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for i in range(ROUNDS):
            for steady in (False, True) if i % 2 == 0 else (True, False):
                runs[steady].append(_run(file, steady))
        base = [r["median"] for r in runs[False]]
        pinned = [r["median"] for r in runs[True]]
        ratio, (low, high) = paired_ratio_ci(base, pinned)
        med = lambda rs, key: sorted(r[key] for r in rs)[len(rs) // 2]  # noqa: E731
        rows.append(
            [
                file,
                f"{sorted(base)[len(base) // 2] * 1e3:.2f} ms",
                f"{sorted(pinned)[len(pinned) // 2] * 1e3:.2f} ms",
                f"{ratio:.2f}x [{low:.2f}, {high:.2f}]",
                f"{med(runs[False], 'faults'):.0f} -> {med(runs[True], 'faults'):.0f}",
                f"{med(runs[False], 'peak_kib') / 1024:.0f} -> {med(runs[True], 'peak_kib') / 1024:.0f} MiB",
            ]
        )
        print("  " + " | ".join(f"{h}: {v}" for h, v in zip(header, rows[-1])), flush=True)
    threads = runs[False][0]["threads"] if rows else "-"
    print(
        f"latency of one call on the example batch, median per fresh process; {ROUNDS} processes a side, "
        f"alternated; threads: {threads}; pinned: {' '.join(f'{k}={v}' for k, v in STEADY_ENV.items())}"
    )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], float(sys.argv[3]))
    else:
        main()
