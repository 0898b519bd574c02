"""The gate on this machine: false alarms on unchanged code, detection of planted slowdowns.

    python -m benchmarks gate            # the benchmark (about 10 minutes on 2 busy cores)
    python -m benchmarks.gate --ci       # CI: gate the examples' counts against benchmarks/baselines/
    python -m benchmarks.gate --update   # re-write those baselines (review the diff, then commit)

The benchmark runs whole gate decisions (accel.gating.run.gate_sides: alternating AB/BA process
pairs, 6 to start, up to 16) on tests/planted/gate_mlp.py, whose candidate side repeats its matmul
block 0%, 5%, 10% or 20% more often (ACCEL_GATE_SLOWDOWN). Replicates are forked from this
process (which imported torch but never ran it), pinned to one thread, with a short timing budget,
so a gate run takes seconds. A run "caught" the slowdown when its latency verdict is FAIL.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLANTED = ROOT / "tests" / "planted" / "gate_mlp.py"
BASELINES = ROOT / "benchmarks" / "baselines"
EXAMPLES = ROOT / "examples"
THRESHOLD = 0.03
RUNS = {0.0: 20, 0.05: 10, 0.10: 10, 0.20: 10}


def gate_once(slowdown: float, threshold: float, seed_env: int):
    from accel.gating.bench import BenchConfig, Side
    from accel.gating.run import GateConfig, gate_sides
    from accel.gating.verdicts import Thresholds

    config_bench = BenchConfig(
        warmup_calls=5, min_calls=20, budget_seconds=0.15, threads=1, memory=False, launcher="fork"
    )
    config = GateConfig(
        thresholds=Thresholds(
            max_slowdown=threshold, max_flops_growth=10.0, max_ops_growth=10.0, max_bytes_growth=10.0
        ),
        bench=config_bench,
        budget_seconds=60.0,
    )
    base = Side(file=PLANTED, cwd=PLANTED.parent, env=(("ACCEL_GATE_RUN", str(seed_env)),))
    cand = Side(
        file=PLANTED,
        cwd=PLANTED.parent,
        env=(("ACCEL_GATE_RUN", str(seed_env)), ("ACCEL_GATE_SLOWDOWN", str(slowdown))),
    )
    result = gate_sides(base, cand, config)
    latency = next(v for v in result.verdicts if v.metric == "latency_seconds")
    # What a one-shot comparison (one run against the previous one, pytest-benchmark style) would
    # say: the share of single process pairs whose ratio alone exceeds the threshold.
    pairs = zip(result.baseline_samples["latency_seconds"], result.candidate_samples["latency_seconds"])
    one_shot = [b / a - 1.0 > threshold for a, b in pairs]
    return latency, result.elapsed_seconds, sum(one_shot) / len(one_shot)


def benchmark(threshold: float = THRESHOLD, runs: dict[float, int] = RUNS) -> None:
    print(
        f"gate_mlp.py, --max-slowdown {threshold * 100:.0f}%, AB/BA fork pairs (6..16), 1 thread; "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'planted':>8} {'runs':>5} {'fail':>5} {'warn':>5} {'pass':>5} {'invalid':>8} {'median est':>11} "
        f"{'pairs':>6} {'s/run':>6} {'1-shot alarms':>14}"
    )
    for slowdown, count in runs.items():
        tally: Counter = Counter()
        estimates, pairs, seconds, one_shots = [], [], [], []
        for run in range(count):
            verdict, elapsed, one_shot = gate_once(slowdown, threshold, run)
            one_shots.append(one_shot)
            tally[verdict.verdict.value] += 1
            estimates.append(verdict.change)
            pairs.append(verdict.samples)
            seconds.append(elapsed)
        estimates.sort()
        print(
            f"{slowdown * 100:>7.0f}% {count:>5} {tally['fail']:>5} {tally['warn']:>5} {tally['pass']:>5} "
            f"{tally['invalid']:>8} {estimates[len(estimates) // 2] * 100:>+10.1f}% "
            f"{sum(pairs) / len(pairs):>6.1f} {sum(seconds) / len(seconds):>6.1f} "
            f"{sum(one_shots) / len(one_shots) * 100:>13.0f}%",
            flush=True,
        )


def example_files() -> list[Path]:
    """Examples that define a pipeline (scripts are profiled, not gated)."""
    from accel.core.loading import is_plain_script

    return [f for f in sorted(EXAMPLES.glob("*.py")) if not is_plain_script(f)]


def ci(update: bool = False) -> int:
    """Gate each example's counts against its committed baseline; 1 when any did more work."""
    from accel.core.errors import AccelError
    from accel.gating.baseline import from_bench, save_baseline
    from accel.gating.bench import BenchConfig, bench
    from accel.gating.run import GateConfig, gate_baseline
    from accel.gating.verdicts import Verdict

    inline = BenchConfig(launcher="inline")  # counts do not depend on the process: one process for all
    worst = 0
    for file in example_files():
        baseline = BASELINES / f"{file.stem}.json"
        started = time.perf_counter()
        try:
            if update:
                save_baseline(baseline, from_bench(bench(file, config=inline, timing=False)))
                print(f"{file.name}: baseline written to {baseline.relative_to(ROOT)}")
                continue
            if not baseline.exists():
                # A new example is not a regression: it is gated once its baseline is committed.
                print(f"{file.name}: no baseline yet (run python -m benchmarks.gate --update, review, commit)")
                continue
            result = gate_baseline(file, baseline, GateConfig(bench=inline, timing=False))
        except AccelError as exc:
            print(f"{file.name}: error: {exc.message} ({exc.hint})")
            worst = max(worst, 2)
            continue
        lines = [
            f"  {v.verdict.value:<8} {v.metric}: {v.reason}" for v in result.verdicts if v.verdict is not Verdict.PASS
        ]
        print(f"{file.name}: {result.verdict.value.upper()} ({time.perf_counter() - started:.1f} s)")
        if lines:
            print("\n".join(lines))
        if result.proposed_baseline:
            print(
                f"  counts dropped: review {Path(result.proposed_baseline).relative_to(ROOT)} and commit it "
                "as the baseline"
            )
        worst = max(worst, result.exit_code())
    return worst


def main() -> None:
    benchmark()


if __name__ == "__main__":
    if "--ci" in sys.argv[1:]:
        sys.exit(ci())
    if "--update" in sys.argv[1:]:
        sys.exit(ci(update=True))
    main()
