"""`python -m benchmarks data_path_optimizers`: the data-path and memory optimizers on planted pipelines.

1. cache.decoded: steady-state Pipeline.run() of a JPEG decode-bound pipeline, after the one-time
   build, against the original (target >= 5x); the build cost is reported apart.
2. cache.results: a 64-request stream with 8 distinct inputs, the cache starting empty on every run
   (target >= 3x).
3. loader.tune / workers: a loader-bound pipeline with num_workers = cores against 0 (target: close
   to the core count), and what loader.tune chose.
4. patch.inference: peak memory of one forward of a 512x512 CNN before and after (target <= 0.5x).

Everything runs with one torch intra-op thread (both sides). Speedups are ratios of medians of interleaved runs with a 95% CI (accel.core.measure.compare_interleaved).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

import accel
from accel.core.machine import describe_machine
from accel.core.measure import compare_interleaved, peak_memory_bytes, thread_count
from accel.optimizing.optimizers import OPTIMIZERS, Context
from accel.optimizing.optimizers.cache_results import ResultCache

PLANTED = Path(__file__).resolve().parent.parent / "tests" / "planted"


def _row(name: str, baseline: str, optimized: str, ratio: str, target: str, met: bool, note: str = "") -> tuple:
    return (name, baseline, optimized, ratio, target, "yes" if met else "NO", note)


def decoded_cache(context: Context) -> tuple:
    pipeline = accel.load(PLANTED / "dp_decode_bound.py")
    optimizer = OPTIMIZERS.get("cache.decoded")
    with tempfile.TemporaryDirectory() as directory:
        applied = optimizer.apply(pipeline, optimizer.Config(cache_dir=directory), context)
        comparison = compare_interleaved(pipeline.run, applied.pipeline.run, warmup=1, min_rounds=7, budget_seconds=20)
    n = len(pipeline.source)
    low, high = comparison.speedup_ci
    return _row(
        "cache.decoded (JPEG decode-bound, steady state)",
        f"{n / comparison.baseline.median:,.0f} samples/s",
        f"{n / comparison.candidate.median:,.0f} samples/s",
        f"{comparison.speedup:.1f}x [{low:.1f}, {high:.1f}]",
        ">= 5x",
        comparison.speedup >= 5,
        f"one-time build {applied.setup_seconds:.2f} s for {n} samples",
    )


def result_cache(context: Context) -> tuple:
    pipeline = accel.load(PLANTED / "dp_repeats.py")
    fresh = {}

    def cached_run() -> None:
        fresh["cache"] = ResultCache(1 << 28)  # empty on every run: a new stream, not a warm replay
        pipeline.replace(forward_wrapper=fresh["cache"]).run()

    comparison = compare_interleaved(pipeline.run, cached_run, warmup=1, min_rounds=7, budget_seconds=20)
    n = len(pipeline.source)
    low, high = comparison.speedup_ci
    return _row(
        "cache.results (64 requests, 8 distinct)",
        f"{n / comparison.baseline.median:,.0f} samples/s",
        f"{n / comparison.candidate.median:,.0f} samples/s",
        f"{comparison.speedup:.1f}x [{low:.1f}, {high:.1f}]",
        ">= 3x",
        comparison.speedup >= 3,
        f"hit rate {fresh['cache'].hit_rate:.0%}",
    )


def workers(context: Context) -> tuple:
    pipeline = accel.load(PLANTED / "dp_loader_bound.py")
    cores = context.machine.cores
    with_workers = pipeline.replace(num_workers=cores)
    comparison = compare_interleaved(pipeline.run, with_workers.run, warmup=1, min_rounds=5, budget_seconds=30)
    optimizer = OPTIMIZERS.get("loader.tune")
    tuned = optimizer.apply(pipeline, optimizer.Config(prefetch_factors=(2,)), context)
    n = len(pipeline.source)
    low, high = comparison.speedup_ci
    return _row(
        f"num_workers={cores} vs 0 (loader-bound)",
        f"{n / comparison.baseline.median:,.0f} samples/s",
        f"{n / comparison.candidate.median:,.0f} samples/s",
        f"{comparison.speedup:.2f}x [{low:.2f}, {high:.2f}]",
        f"close to {cores}x",
        comparison.speedup >= 0.75 * cores,
        f"loader.tune chose {tuned.notes['chosen']} (predicted {tuned.notes['predicted_gain_at_most_workers']:.2f}x at most workers)",
    )


def patch_memory(context: Context) -> tuple:
    pipeline = accel.load(PLANTED / "dp_highres_cnn.py")
    optimizer = OPTIMIZERS.get("patch.inference")
    applied = optimizer.apply(pipeline, optimizer.Config(), context)
    x = pipeline.inputs[0]
    with torch.inference_mode():
        before = peak_memory_bytes(lambda: pipeline.model(x))
        after = peak_memory_bytes(lambda: applied.pipeline.model(x))
        error = float((pipeline.model(x) - applied.pipeline.model(x)).abs().max() / pipeline.model(x).abs().max())
    speed = compare_interleaved(
        lambda: _forward(pipeline.model, x),
        lambda: _forward(applied.pipeline.model, x),
        warmup=1,
        min_rounds=5,
        budget_seconds=10,
    )
    notes = applied.notes
    return _row(
        "patch.inference (512x512 CNN, peak memory)",
        f"{before / 2**20:.1f} MiB",
        f"{after / 2**20:.1f} MiB",
        f"{after / before:.2f}x",
        "<= 0.5x",
        after <= 0.5 * before,
        f"{notes['prefix_layers']} layers, {notes['grid']}x{notes['grid']} grid, halo +{notes['halo_extra_compute_share']:.0%} MACs, "
        f"time {1 / speed.speedup:.2f}x, max rel err {error:.1e}",
    )


def _forward(model, x) -> None:
    with torch.inference_mode():
        model(x)


def main() -> None:
    context = Context(machine=describe_machine(), workdir=Path(tempfile.mkdtemp(prefix="accel-bench-")))
    # One intra-op thread on both sides: on a shared machine, torch's thread pool waiting at barriers
    # for a busy core costs tiny models milliseconds per op and drowns what is being measured.
    with thread_count(1):
        rows = [decoded_cache(context), result_cache(context), workers(context), patch_memory(context)]
    header = ("case", "baseline", "optimized", "ratio [95% CI]", "target", "met", "notes")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    load = os.getloadavg()[0]
    print(
        f"machine: {context.machine.cores} usable cores (load average {load:.1f} when done), torch {torch.__version__}, "
        "1 intra-op thread"
    )
    for row in [header] + rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())


if __name__ == "__main__":
    main()
