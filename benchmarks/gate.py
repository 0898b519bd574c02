"""The gate on this machine: false alarms on unchanged code, detection of planted slowdowns.

    python -m benchmarks gate            # the benchmark (about 20 minutes on 2 busy cores)
    python -m benchmarks.gate --ci       # CI: gate the examples' counts against benchmarks/baselines/
    python -m benchmarks.gate --update   # re-write those baselines (review the diff, then commit)

Both gate modes on a ~2 ms model (tests/planted/gate_2ms.py), measured side by side in one run:

- `--against`: whole `accel.gating.against.gate_against` decisions on a real git repository built
  in a temporary folder, the model's code living in a src/ layout package (`src/gatelib`) that the
  pipeline file imports. Unchanged: the file gated against its own commit. Planted: a commit that
  changes only the package, either 10% more matmul repeats (counts grow too) or 10% host-side
  Python work after identical tensor ops (counts identical: only timing can see it).
  `--max-slowdown 3%`; "caught" means the latency verdict is FAIL.
- stored baseline: a baseline of 3 runs x 6 replicates saved first, then `gate_baseline` runs,
  unchanged or with a planted 30% host-side slowdown (identical counts); default 10% threshold.

Replicates are forked from this process (which imported torch but never ran it), one thread each,
a short timing budget, so a gate run takes seconds; the CLI spawns fresh interpreters instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLANTED = ROOT / "tests" / "planted" / "gate_2ms.py"
BASELINES = ROOT / "benchmarks" / "baselines"
EXAMPLES = ROOT / "examples"
AGAINST_THRESHOLD = 0.03
BASELINE_THRESHOLD = 0.10
AGAINST_RUNS = {"unchanged": 20, "10% more matmuls": 10, "10% host-side Python": 10}
BASELINE_RUNS = {"unchanged": 20, "30% host-side Python": 10}
BASELINE_SAVED_RUNS = 3
# Timed calls of one lockstep pair, both sides together: ~150 calls per side of the 2 ms model.
PAIR_BUDGET_SECONDS = 0.6


def _bench_config():
    from accel.gating.bench import BenchConfig

    return BenchConfig(
        replicates=6, warmup_calls=5, min_calls=20, budget_seconds=0.3, threads=1, memory=False, launcher="fork"
    )


def _gate_config(threshold: float, pair_budget_seconds: float | None = None):
    import dataclasses

    from accel.gating.run import GateConfig
    from accel.gating.verdicts import Thresholds

    bench = _bench_config()
    if pair_budget_seconds is not None:
        bench = dataclasses.replace(bench, budget_seconds=pair_budget_seconds)
    return GateConfig(thresholds=Thresholds(max_slowdown=threshold), bench=bench, budget_seconds=120.0)


def _package_source(slowdown: float, host: float) -> str:
    text = PLANTED.read_text()
    text = text.replace('os.environ.get("ACCEL_GATE_SLOWDOWN", "0")', repr(str(slowdown)))
    return text.replace('os.environ.get("ACCEL_GATE_HOST_SLOWDOWN", "0")', repr(str(host)))


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@local", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def planted_repo(folder: Path) -> tuple[Path, dict[str, str]]:
    """A git repo whose pipeline imports src/gatelib; one commit per planted variant."""
    repo = folder / "repo"
    (repo / "src" / "gatelib").mkdir(parents=True)
    (repo / "model.py").write_text("from gatelib import example_inputs, model  # noqa: F401\n")
    _git(repo, "init", "-q")
    commits = {}
    for name, slowdown, host in (
        ("unchanged", 0.0, 0.0),
        ("10% more matmuls", 0.10, 0.0),
        ("10% host-side Python", 0.0, 0.10),
    ):
        if name != "unchanged":
            _git(repo, "checkout", "-q", commits["unchanged"])
        (repo / "src" / "gatelib" / "__init__.py").write_text(_package_source(slowdown, host))
        _git(repo, "add", "-A")
        _git(repo, "commit", "-qm", name)
        commits[name] = _git(repo, "rev-parse", "HEAD")
    return repo, commits


def _row(mode: str, planted: str, verdicts: list, seconds: list[float], sizes: list[int]) -> str:
    tally = Counter(v.verdict.value for v in verdicts)
    estimates = sorted(v.change for v in verdicts)
    noise = sorted(v.noise for v in verdicts if v.noise is not None)
    return (
        f"{mode:<9} {planted:<22} {len(verdicts):>4} {tally['fail']:>5} {tally['warn']:>5} {tally['pass']:>5} "
        f"{tally['invalid']:>8} {estimates[len(estimates) // 2] * 100:>+9.1f}% "
        f"{(noise[len(noise) // 2] * 100 if noise else float('nan')):>6.1f}% "
        f"{sum(sizes) / len(sizes):>6.1f} {sum(seconds) / len(seconds):>6.1f}"
    )


def against_rows(folder: Path) -> list[str]:
    from accel.gating.against import gate_against

    repo, commits = planted_repo(folder)
    rows = []
    for name, count in AGAINST_RUNS.items():
        _git(repo, "checkout", "-q", commits[name])
        verdicts, seconds, sizes = [], [], []
        for _ in range(count):
            config = _gate_config(AGAINST_THRESHOLD, PAIR_BUDGET_SECONDS)
            result = gate_against(repo / "model.py", commits["unchanged"], config)
            latency = next(v for v in result.verdicts if v.metric == "latency_seconds")
            verdicts.append(latency)
            seconds.append(result.elapsed_seconds)
            sizes.append(result.pairs)
        rows.append(_row("--against", name, verdicts, seconds, sizes))
        print(rows[-1], flush=True)
    return rows


def baseline_rows(folder: Path) -> list[str]:
    from accel.gating.baseline import from_bench, save_baseline
    from accel.gating.bench import bench
    from accel.gating.run import gate_baseline

    path = folder / "baseline.json"
    save_baseline(path, from_bench(*[bench(PLANTED, config=_bench_config()) for _ in range(BASELINE_SAVED_RUNS)]))
    rows = []
    for name, count in BASELINE_RUNS.items():
        os.environ["ACCEL_GATE_HOST_SLOWDOWN"] = "0.3" if name != "unchanged" else "0"
        verdicts, seconds, sizes = [], [], []
        try:
            for _ in range(count):
                result = gate_baseline(PLANTED, path, _gate_config(BASELINE_THRESHOLD))
                verdicts.append(next(v for v in result.verdicts if v.metric == "latency_seconds"))
                seconds.append(result.elapsed_seconds)
                sizes.append(result.pairs)
        finally:
            os.environ.pop("ACCEL_GATE_HOST_SLOWDOWN", None)
        rows.append(_row("baseline", name, verdicts, seconds, sizes))
        print(rows[-1], flush=True)
    return rows


def design_error(sims: int = 4000, noise: float = 0.03, seed: int = 0) -> str:
    """Simulated at a true change equal to the threshold: how often the sequential design FAILs and
    PASSes over its looks, against a 95% test repeated at each look (the old rule)."""
    import math

    import numpy as np

    from accel.gating.verdicts import METRICS, judge_pairs, planned_looks

    looks = planned_looks()
    rng = np.random.default_rng(seed)
    threshold = AGAINST_THRESHOLD
    tally: dict[bool, Counter] = {True: Counter(), False: Counter()}
    for row in rng.normal(math.log1p(threshold), noise, size=(sims, looks[-1])):
        cand = list(np.exp(row))
        for designed in (True, False):
            for look in looks:
                found = judge_pairs(
                    METRICS["latency_seconds"],
                    [1.0] * look,
                    cand[:look],
                    threshold,
                    final=look == looks[-1],
                    looks=looks if designed else None,
                )
                if found is not None:
                    tally[designed][found.verdict.value] += 1
                    break
    share = lambda c, k: 100.0 * c[k] / sims  # noqa: E731
    return (
        f"simulated at a true change = the threshold ({sims} gates, looks {looks[0]}..{looks[-1]}): "
        f"sequential design FAIL {share(tally[True], 'fail'):.1f}% PASS {share(tally[True], 'pass'):.1f}%; "
        f"95% at every look FAIL {share(tally[False], 'fail'):.1f}% PASS {share(tally[False], 'pass'):.1f}% "
        "(target 2.5% each)"
    )


def benchmark() -> None:
    print(
        f"gate_2ms.py (src/ package in a git repo for --against), fork launcher, 1 thread; --against "
        f"--max-slowdown {AGAINST_THRESHOLD * 100:.0f}% (lockstep pairs, looks at 6..16), stored baseline "
        f"{BASELINE_SAVED_RUNS} runs x 6 replicates at {BASELINE_THRESHOLD * 100:.0f}%; "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    print(
        f"{'mode':<9} {'planted':<22} {'runs':>4} {'fail':>5} {'warn':>5} {'pass':>5} {'invalid':>8} "
        f"{'median est':>10} {'noise':>7} {'n':>6} {'s/run':>6}",
        flush=True,
    )
    folder = Path(tempfile.mkdtemp(prefix="accel-gate-bench-"))
    started = time.perf_counter()
    try:
        against_rows(folder)
        baseline_rows(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"total {time.perf_counter() - started:.0f} s, load {os.getloadavg()[0]:.1f}")
    print(design_error(), flush=True)


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
