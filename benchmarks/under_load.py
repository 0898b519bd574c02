"""Robust under load: each decision accel makes, made on the machine as it is and beside a CPU burner.

    python -m benchmarks under_load     # about 10 minutes on 2 busy cores

Every decision is made twice, with the same inputs: first on the machine as it is (other work
included), then beside a burner of 2 busy-loop processes per core (a load average of about 6 on 2
cores). Each side records the 1-minute load average when its decision was made. Per decision:
"same" (the verdicts agree), "abstained (too noisy)" (a side said its measurement could not
decide, which is allowed) or "flipped" (the loaded side decided the other way: a wrong decision).

The decisions, each kept small:
- profile: the primary finding of planted pipelines with a problem and one without (3 s budget);
  a finding whose evidence says "too_noisy" abstains for its kind;
- keep/revert: `accel.optimize` with one candidate, one that a quiet machine keeps (ONNX Runtime
  int8 on a batch-1 wide MLP) and one it reverts (a benchmark-only optimizer that adds 50% more
  matmuls, as tests/optimizing/test_engine.py plants a slower candidate); "too noisy to decide" abstains;
- gate: `gate_sides` of a ~2 ms model against itself (A/A: PASS, never FAIL) and against a 30%
  host-side slowdown (FAIL, never PASS); WARN and INVALID abstain;
- straggler: the balanced two-rank DDP control (no straggler above low) and a planted input straggler.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parent.parent
PLANTED = ROOT / "tests" / "planted"
# Busy-loop processes per core: with the benchmark itself and what else runs, a load average of about 6 on 2 cores.
BURNERS_PER_CORE = 2
# The loaded side starts once the 1-minute load average (an exponential average with a minute's
# time constant) reaches TARGET_LOAD_PER_CORE x cores, after MIN_WARMUP_SECONDS at least and
# MAX_WARMUP_SECONDS at most (by then it has risen 86% of the way to the burner's load).
TARGET_LOAD_PER_CORE = 3.0
MIN_WARMUP_SECONDS = 20.0
MAX_WARMUP_SECONDS = 120.0
# A busy loop that ends when its parent (the pid it is given: one read at its start-up could already
# be the reaper's) is gone, so that even a benchmark killed with SIGKILL leaves no burner behind;
# the check is once per million iterations, to stay a busy loop.
BURNER_CODE = "import os, sys\nwhile os.getppid() == int(sys.argv[1]):\n    for _ in range(10**6): pass\n"
PROFILE_BUDGET_SECONDS = 3.0
OPTIMIZE_BUDGET_SECONDS = 40.0
# Dead matmuls the slower candidate adds to opt_dead_work's 28 per call: 1.5x slower.
SLOWER_EXTRA_CALLS = 14
GATE_HOST_SLOWDOWN = "0.3"
STRAGGLER_STEPS = "16"
STRAGGLER_TIMEOUT_SECONDS = 240
# Every verdict: a side that abstains on all of them could not decide at all.
ANY = "*"
ABSTAINED = frozenset({ANY})


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One side's decision: its verdict, the verdicts its measurement could not tell apart (ANY for
    a decision that abstained whole), the load average when it was made and how long it took."""

    verdict: str
    undecided: frozenset[str] = frozenset()
    load: float = 0.0
    seconds: float = 0.0

    def abstains_on(self, verdict: str) -> bool:
        return ANY in self.undecided or verdict in self.undecided

    def describe(self) -> str:
        """The verdict, and the kinds it could not decide on (a profile's findings too noisy to decide)."""
        kinds = sorted(self.undecided - {ANY, self.verdict})
        return f"{self.verdict} ({', '.join(kinds)} too noisy)" if kinds else self.verdict


@dataclasses.dataclass(frozen=True)
class Decision:
    kind: str
    input: str
    make: Callable[[], Outcome]


def compare(quiet: Outcome, loaded: Outcome) -> str:
    """'abstained (too noisy)' when either side could not tell the other's verdict from its own (two
    sides that agree only by both abstaining included), else 'same' or 'flipped'."""
    if loaded.abstains_on(quiet.verdict) or quiet.abstains_on(loaded.verdict):
        return "abstained (too noisy)"
    return "same" if quiet.verdict == loaded.verdict else "flipped"


# --- the burner --------------------------------------------------------------------------------


def start_burners(count: int) -> list[subprocess.Popen]:
    """`count` busy-loop processes, each in its own process group (killed whole by stop_burners)."""
    burners: list[subprocess.Popen] = []
    try:
        for _ in range(count):
            burners.append(
                subprocess.Popen([sys.executable, "-c", BURNER_CODE, str(os.getpid())], start_new_session=True)
            )
    except BaseException:
        stop_burners(burners)
        raise
    return burners


def stop_burners(burners: list[subprocess.Popen]) -> None:
    """Kill each burner's process group and reap it."""
    for process in burners:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    for process in burners:
        process.wait()


@contextlib.contextmanager
def burning(count: int) -> Iterator[list[subprocess.Popen]]:
    burners = start_burners(count)
    try:
        yield burners
    finally:
        stop_burners(burners)


def load_average() -> float:
    return os.getloadavg()[0]


def warm_up(target_load: float) -> None:
    """Wait for the load average to reach `target_load`, within MIN/MAX_WARMUP_SECONDS."""
    began = time.monotonic()
    time.sleep(MIN_WARMUP_SECONDS)
    while load_average() < target_load and time.monotonic() - began < MAX_WARMUP_SECONDS:
        time.sleep(1.0)


def made(decision: Decision) -> Outcome:
    """The decision made once, with the load average at its end (the last minute: while it ran)."""
    started = time.perf_counter()
    try:
        outcome = decision.make()
    except Exception as exc:  # a benchmark reports: an error is the verdict of this side
        outcome = Outcome(f"error: {type(exc).__name__}: {exc}"[:60])
    return dataclasses.replace(outcome, load=load_average(), seconds=time.perf_counter() - started)


# --- the decisions -------------------------------------------------------------------------------


def profile_primary(name: str) -> Outcome:
    import accel

    report = accel.profile(PLANTED / name, budget_seconds=PROFILE_BUDGET_SECONDS)
    # A finding that withheld its verdict (severity info, "too noisy to decide" in its evidence);
    # one that still stands on a measured speed-up only notes the noise beside it.
    noisy = frozenset(f.kind for f in report.findings if f.severity == "info" and f.evidence.get("too_noisy"))
    # "none" beside a finding that withheld its verdict is no verdict either: that finding could be primary.
    return Outcome(report.primary, noisy | {"none"} if noisy and report.primary == "none" else noisy)


def optimize_verdict(target: str, candidate: str) -> Outcome:
    import accel
    from accel.optimizing.decision import Cause
    from accel.optimizing.recipes import parse_recipe

    guard = {"min_cosine": 0.995, "max_relative_error": 0.1}  # the latency recipe's int8 guard
    recipe = parse_recipe(
        {"name": "under-load", "target": "latency", "rules": [{"name": "one", "try": [candidate], "guard": guard}]}
    )
    result = accel.optimize(PLANTED / target, recipe, budget_seconds=OPTIMIZE_BUDGET_SECONDS)
    step = next(s for s in result.steps if s.optimizer == candidate)
    verdict = step.verdict.value if step.cause is None else f"{step.verdict.value}: {step.cause.value}"
    return Outcome(verdict, ABSTAINED if step.cause is Cause.TOO_NOISY else frozenset())


def slower_candidate() -> Outcome:
    """The engine on opt_dead_work with a candidate that adds dead matmuls: reverted as slower."""
    from accel.optimizing.optimizers import OPTIMIZERS, Applied, Optimizer

    class MoreDeadWork(Optimizer):
        name, slot = "bench.more_dead_work", "bench-slower"

        def apply(self, pipeline, config, context):
            return Applied(pipeline=pipeline.replace(model=pipeline.model.variant(extra=SLOWER_EXTRA_CALLS)))

    OPTIMIZERS.add(MoreDeadWork.name, MoreDeadWork())
    try:
        return optimize_verdict("opt_dead_work.py", MoreDeadWork.name)
    finally:
        OPTIMIZERS.remove(MoreDeadWork.name)


def gate_verdict(host_slowdown: str) -> Outcome:
    from accel.gating.bench import BenchConfig, Side
    from accel.gating.run import GateConfig, gate_sides
    from accel.gating.verdicts import Thresholds

    bench = BenchConfig(
        replicates=6, warmup_calls=5, min_calls=20, budget_seconds=0.3, threads=1, memory=False, launcher="fork"
    )
    config = GateConfig(thresholds=Thresholds(max_slowdown=0.10), bench=bench, budget_seconds=60.0)
    file = PLANTED / "gate_2ms.py"
    candidate = Side(file, env=(("ACCEL_GATE_HOST_SLOWDOWN", host_slowdown),))
    result = gate_sides(Side(file, env=(("ACCEL_GATE_HOST_SLOWDOWN", "0"),)), candidate, config)
    latency = next(v for v in result.verdicts if v.metric == "latency_seconds")
    return Outcome(latency.verdict.value, ABSTAINED if latency.verdict.value in ("warn", "invalid") else frozenset())


def straggler_verdict(case: str) -> Outcome:
    from accel.profiling.run import profile_ranks

    # The balanced control as benchmarks/multirank.py runs it: a step mostly the same wait on both ranks.
    balanced = ("--sample-seconds", "0.002", "--hidden", "256") if case == "none" else ()
    args = ("--straggler", case, "--steps", STRAGGLER_STEPS, *balanced)
    report = profile_ranks(PLANTED / "mr_ddp_train.py", 2, args=args, timeout_seconds=STRAGGLER_TIMEOUT_SECONDS)
    finding = report.finding("straggler")
    if finding is None or finding.severity in ("low", "info"):
        return Outcome("none above low")
    cause = finding.evidence["cause"]
    return Outcome(f"rank {finding.evidence['rank']}, {cause}", ABSTAINED if cause == "unattributed" else frozenset())


def decisions() -> list[Decision]:
    profiled = (
        ("hw_conv_net.py", "compute-bound"),
        ("hw_wide_mlp.py", "memory-bound"),
        ("data_decode_bound.py", "decoding"),
        ("data_well_fed.py", "well fed"),
        ("hw_decoder_lm.py", "no KV cache"),
    )
    found = [
        Decision("profile", f"{name} ({what})", functools.partial(profile_primary, name)) for name, what in profiled
    ]
    return [
        *found,
        Decision(
            "keep/revert",
            "opt_wide_mlp.py, onnx.int8_dynamic",
            lambda: optimize_verdict("opt_wide_mlp.py", "onnx.int8_dynamic"),
        ),
        Decision("keep/revert", "opt_dead_work.py, 1.5x slower", slower_candidate),
        Decision("gate", "gate_2ms.py A/A", lambda: gate_verdict("0")),
        Decision("gate", "gate_2ms.py, 30% slower", lambda: gate_verdict(GATE_HOST_SLOWDOWN)),
        Decision("straggler", "mr_ddp_train.py, balanced", lambda: straggler_verdict("none")),
        Decision("straggler", "mr_ddp_train.py, slow input rank 1", lambda: straggler_verdict("input")),
    ]


def row(decision: Decision, quiet: Outcome, loaded: Outcome) -> str:
    return (
        f"{decision.kind:<12} {decision.input:<34} {quiet.describe():<42}{quiet.load:>5.1f}{quiet.seconds:>5.0f}  "
        f"{loaded.describe():<42}{loaded.load:>5.1f}{loaded.seconds:>5.0f}  {compare(quiet, loaded)}"
    )


def main() -> None:
    from accel.core.machine import describe_machine

    machine = describe_machine()
    cores = os.cpu_count() or 1
    burners = BURNERS_PER_CORE * cores
    print(
        f"{machine.device_name}, {cores} cores, torch kernels {machine.cpu_capability or 'unknown'}; "
        f"loaded side: {burners} busy-loop processes; load average now {load_average():.1f}",
        flush=True,
    )
    chosen = decisions()
    started = time.perf_counter()
    quiet = []
    for decision in chosen:
        quiet.append(made(decision))
        print(f"  as it is: {decision.input}: {quiet[-1].verdict} ({quiet[-1].seconds:.0f} s)", flush=True)
    loaded = []
    with burning(burners):
        warm_up(TARGET_LOAD_PER_CORE * cores)
        for decision in chosen:
            loaded.append(made(decision))
            print(f"  loaded: {decision.input}: {loaded[-1].verdict} ({loaded[-1].seconds:.0f} s)", flush=True)
    print(
        f"{'decision':<12} {'input':<34} {'as it is':<42}{'load':>5}{'s':>5}  {'beside the burner':<42}"
        f"{'load':>5}{'s':>5}  result"
    )
    for decision, a, b in zip(chosen, quiet, loaded):
        print(row(decision, a, b))
    results = [compare(a, b) for a, b in zip(quiet, loaded)]
    print(f"total {time.perf_counter() - started:.0f} s")
    print(
        f"{len(results)} decisions, {results.count('flipped')} flipped, "
        f"{results.count('abstained (too noisy)')} abstained"
    )
