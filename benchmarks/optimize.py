"""`python -m benchmarks optimize`: accel optimize against the single actions a user would try.

For each example: the baseline, each single action alone (torch.compile, ONNX Runtime fp32,
ONNX Runtime int8, PyTorch dynamic int8, bf16 autocast), and accel's result, each measured
interleaved against the baseline in the same run (speedup = ratio of medians, 95% CI). The target
is accel >= the best single action on every example, and never slower than the baseline.
Examples that are missing are skipped.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import torch

import accel
from accel.core.machine import describe_machine
from accel.core.measure import Comparison, compare_interleaved
from accel.optimizing.fresh import FreshTimer
from accel.optimizing.lock import LockEntry, read_lock
from accel.optimizing.optimizers import OPTIMIZERS, Context, make_config, process_wide_among
from accel.optimizing.run import OptimizeResult, optimize
from accel.optimizing.search.engine import Measurer

ROOT = Path(__file__).resolve().parent.parent
# (name, candidate files in order of preference, recipe)
EXAMPLES = (
    ("wide_mlp (batch 1)", ("examples/wide_mlp.py", "tests/planted/opt_wide_mlp.py"), "latency"),
    ("tiny_ops", ("examples/tiny_ops.py",), "latency"),
    ("conv_net", ("examples/conv_net.py",), "latency"),
    ("sequence_encoder", ("examples/sequence_encoder.py",), "throughput"),
)
ACTIONS = (
    ("torch.compile", "compile", {}),
    ("ORT fp32", "onnx.runtime", {}),
    ("ORT int8", "onnx.int8_dynamic", {}),
    ("torch int8", "quantize.int8_dynamic", {}),
    ("bf16 autocast", "precision.bf16", {"mode": "autocast"}),
)
COMPARE_SECONDS = 3.0
ACCEL_BUDGET_SECONDS = 60.0


def _compare(measurer: Measurer, baseline: accel.Pipeline, candidate: accel.Pipeline, seconds: float = 0.0):
    return compare_interleaved(
        measurer.call(baseline),
        measurer.call(candidate),
        warmup=1,
        settle_seconds=0.002,
        min_rounds=3 if measurer.target == "throughput" else 7,
        budget_seconds=seconds or COMPARE_SECONDS,
    )


def _times(speedup: float) -> str:
    return f"{speedup:.2f}x" if speedup >= 0.1 else f"{speedup:.3f}x"


def _file(candidates: tuple[str, ...]) -> Path | None:
    return next((ROOT / c for c in candidates if (ROOT / c).is_file()), None)


@dataclasses.dataclass(frozen=True)
class Action:
    """A single action applied: its pipeline, and the lock entry that rebuilds it in a new process
    (its artifacts under `lock_target`'s folder)."""

    pipeline: accel.Pipeline
    entry: LockEntry
    lock_target: Path


def _action(
    baseline: accel.Pipeline, name: str, params: dict, measurer: Measurer, workdir: Path
) -> tuple[str, float, Action | None]:
    optimizer = OPTIMIZERS.get(name)
    workdir = workdir / name  # each action's artifacts apart, so a fresh process can rebuild it
    workdir.mkdir(parents=True, exist_ok=True)
    context = Context(machine=describe_machine(), workdir=workdir)
    reason = optimizer.applicable(baseline, context)
    if reason and name != "precision.bf16":  # a user tries autocast whatever accel's probe says
        return "n/a", 0.0, None
    try:
        applied = optimizer.apply(baseline, make_config(optimizer, params), context)
        comparison = _compare(measurer, baseline, applied.pipeline)
    except Exception as exc:  # noqa: BLE001 - an action that fails is reported, not fatal
        return f"failed ({type(exc).__name__})", 0.0, None
    action = Action(applied.pipeline, LockEntry(name, dict(params), applied.state), workdir / "accel.lock.yaml")
    return _times(comparison.speedup), comparison.speedup, action


def accel_comparisons(
    file: Path,
    result: OptimizeResult,
    measurer: Measurer,
    baseline: accel.Pipeline,
    best: Action | None,
    seconds: float,
) -> tuple[Comparison, Comparison | None, str]:
    """accel's pipeline against the baseline and against the best single action: interleaved in
    this process, or, where accel kept a process-wide setting (malloc's thresholds), which no one
    process can hold for one side only, in alternating fresh processes rebuilt from the lock entries
    (as the engine times it). The third value says which."""
    kept = result.result.choices
    if result.lock_path is None or not process_wide_among(c.optimizer for c in kept):
        versus = _compare(measurer, best.pipeline, result.pipeline, seconds) if best is not None else None
        return _compare(measurer, baseline, result.pipeline), versus, "in this process"
    entries = read_lock(result.lock_path).entries
    fresh = FreshTimer(file, Path(result.lock_path), measurer.target)
    against_baseline = fresh.compare((), entries, seconds).comparison
    versus = (
        fresh.compare((best.entry,), entries, seconds, locks=(best.lock_target, None)).comparison
        if best is not None
        else None
    )
    return against_baseline, versus, "fresh processes"


def run_example(label: str, file: Path, recipe: str) -> list[str]:
    baseline = accel.load(file)
    measurer = Measurer(baseline, recipe)
    row = [label]
    best_speedup, best = 0.0, None
    with tempfile.TemporaryDirectory() as workdir:
        for _, name, params in ACTIONS:
            text, speedup, action = _action(baseline, name, params, measurer, Path(workdir))
            row.append(text)
            if action is not None and speedup > best_speedup:
                best_speedup, best = speedup, action
        began = time.perf_counter()
        result = optimize(
            file,
            recipe,
            out_dir=Path(workdir) / "accel",
            budget_seconds=ACCEL_BUDGET_SECONDS * (1.5 if recipe == "throughput" else 1.0),
        )
        seconds = time.perf_counter() - began
        # accel against the baseline and the best single action: the target is >= 1 (noise aside).
        comparison, versus, _ = accel_comparisons(file, result, measurer, baseline, best, COMPARE_SECONDS)
    kept = "+".join(c.optimizer for c in result.result.choices) or "nothing"
    row += [_times(comparison.speedup), _times(versus.speedup) if versus else "-", kept, f"{seconds:.0f} s"]
    base = measurer.summary(comparison.baseline.median, None)
    row.insert(1, f"{base['median_seconds'] * 1e3:.2f} ms" + (" /pass" if measurer.target == "throughput" else ""))
    return row


def main() -> None:
    torch.manual_seed(0)
    header = ["example", "baseline"] + [a[0] for a in ACTIONS] + ["accel", "accel/best", "accel kept", "search"]
    rows = []
    for label, candidates, recipe in EXAMPLES:
        file = _file(candidates)
        if file is None:
            print(f"skipped {label}: none of {', '.join(candidates)} exists")
            continue
        print(f"measuring {label} ({file.relative_to(ROOT)}, recipe {recipe})", flush=True)
        rows.append(run_example(label, file, recipe))
        print("  " + " | ".join(f"{h}: {v}" for h, v in zip(header, rows[-1])), flush=True)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"threads: {torch.get_num_threads()}; speedups are against the baseline, measured interleaved in this run")
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)))
