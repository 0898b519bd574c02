"""Multi-rank: what accel's per-rank timing costs, and the straggler verdict on each planted case.

Overhead: the balanced planted DDP script (tests/planted/mr_ddp_train.py, 2 gloo ranks) runs under a
plain torchrun and under `accel profile --nproc-per-node 2 --no-trace`, interleaved (plain, accel,
accel, plain, ...) so load drift hits both. The script times its own steps in both runs (the same
clock reads either way); per rank, the overhead is accel's median step over plain's median step - 1
(median over pairs, with a bootstrap 95% interval of the paired ratio). Goal: under 5% of step time.
A shared machine moves a 2-rank step by more than that from run to run, so the table also shows a
bound noise cannot move: what the hooks do per step (clock reads and records for one batch request
and the step's DDP buckets), timed on an empty loop, over the plain step time.

Verdicts: each planted case under accel (torchrun), and from the traces the script itself wrote,
read back with --traces.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from accel.core.measure import now
from accel.core.stats import paired_ratio_ci
from accel.profiling.multirank.rank import Recorder
from accel.profiling.run import profile_ranks, profile_traces
from accel.profiling.script import LoaderCall

SCRIPT = Path(__file__).parent.parent / "tests" / "planted" / "mr_ddp_train.py"
NPROC = 2
PAIRS = 3
OVERHEAD_STEPS = "60"
VERDICT_STEPS = "16"
TIMEOUT_SECONDS = 300
CASES = (
    ("input", "rank 1, data_loading", ()),
    ("compute", "rank 1, compute_bound", ()),
    ("none", "none above low", ("--sample-seconds", "0.002", "--hidden", "256")),
)


def plain_torchrun(args: list[str]) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={NPROC}"]
    process = subprocess.Popen(
        [*command, str(SCRIPT), *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        if process.wait(timeout=TIMEOUT_SECONDS) != 0:
            raise RuntimeError(f"plain torchrun failed with status {process.returncode}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def median_steps(folder: Path) -> dict[int, float]:
    """Per rank, the median of the steps the script timed (its first step left out: warm-up)."""
    return {
        int(path.stem.removeprefix("rank")): statistics.median(json.loads(path.read_text())[1:])
        for path in folder.glob("rank*.json")
    }


def hooks_seconds_per_step(buckets: int, repeats: int = 20_000) -> float:
    """What the hooks add per step: a timed batch request and `buckets` recorded collectives."""
    recorder = Recorder()
    began = now()
    for _ in range(repeats):
        t0 = now()
        recorder.loader.append(LoaderCall(t0, now(), 8, 0, False))
        for _ in range(buckets):
            arrival = now()
            recorder.record("ddp.allreduce", arrival, now())
    return (now() - began) / repeats


def overhead_rows() -> list[tuple]:
    plain: dict[int, list[float]] = {r: [] for r in range(NPROC)}
    timed: dict[int, list[float]] = {r: [] for r in range(NPROC)}
    buckets = 0
    for index in range(PAIRS):
        for side in ("plain", "accel") if index % 2 == 0 else ("accel", "plain"):
            with tempfile.TemporaryDirectory() as out:
                args = ["--steps", OVERHEAD_STEPS, "--step-seconds-out", out]
                if side == "plain":
                    plain_torchrun(args)
                else:
                    report = profile_ranks(SCRIPT, NPROC, args=tuple(args), timeout_seconds=TIMEOUT_SECONDS)
                    buckets = max(r["collectives"] for r in report.extra["ranks"]) // int(OVERHEAD_STEPS)
                for rank, seconds in median_steps(Path(out)).items():
                    (plain if side == "plain" else timed)[rank].append(seconds)
    per_step = hooks_seconds_per_step(max(buckets, 1))
    rows = []
    for rank in range(NPROC):
        ratio, (low, high) = paired_ratio_ci(timed[rank], plain[rank])
        base = statistics.median(plain[rank])
        rows.append((rank, base, statistics.median(timed[rank]), ratio - 1, low - 1, high - 1, per_step / base))
    return rows


def verdict(report) -> str:
    finding = report.finding("straggler")
    if finding is None or finding.severity in ("low", "info"):
        return (
            f"none above low ({finding.severity if finding else 'no finding'}, {finding.share if finding else 0:.0%})"
        )
    return f"rank {finding.evidence['rank']}, {finding.evidence['cause']} ({finding.severity}, {finding.share:.0%})"


def main() -> None:
    rows = overhead_rows()
    print(f"{'rank':<6}{'plain step':>12}{'accel step':>12}{'overhead':>10}{'95% CI':>20}{'hooks bound':>13}")
    for rank, base, timed, overhead, low, high, bound in rows:
        print(
            f"{rank:<6}{base * 1e3:>10.2f}ms{timed * 1e3:>10.2f}ms{overhead:>+10.1%}"
            f"{f'[{low:+.1%}, {high:+.1%}]':>20}{bound:>13.4%}"
        )
    print(f"goal: overhead under 5% of step time ({PAIRS} interleaved pairs of {OVERHEAD_STEPS}-step runs)")
    print()
    print(f"{'planted case':<14}{'expected':<24}{'accel --nproc-per-node 2':<36}{'accel --traces (script traces)':<36}")
    for case, expected, extra in CASES:
        with tempfile.TemporaryDirectory() as out:
            traces = Path(out) / "traces"
            args = ("--straggler", case, "--steps", VERDICT_STEPS, "--trace-out", str(traces), *extra)
            live = profile_ranks(SCRIPT, NPROC, args=args, timeout_seconds=TIMEOUT_SECONDS)
            print(f"{case:<14}{expected:<24}{verdict(live):<36}{verdict(profile_traces(traces)):<36}")


if __name__ == "__main__":
    main()
