"""Cost of profiling: the timing pass against a plain run of the same pipeline.

The timing pass is what `accel profile` measures stage and end-to-end time with (no profiler
attached): clock reads around every batch fetch and forward call. Here each example runs both ways
over the same batches, interleaved (plain, timed, timed, plain, ...) so load drift hits both:
- source pipelines: a plain loop over the DataLoader calling forward, against the end-to-end pass;
- example-input pipelines: N plain forward calls, against N calls timed as time_calls times them.
The overhead is timed / plain - 1 (median of paired ratios, with its 95% interval); the target is
under 10%. On a shared machine the interleaved ratio is noisy, so the table also shows a bound that
noise cannot move: what the timing pass adds per batch (clock reads and bookkeeping, timed on an
empty loop) over the plain time per batch. Both run with one intra-op thread: a descheduled
OpenMP worker on a loaded machine stalls a whole op, which has nothing to do with the timing pass.
The hardware passes (counting, the profiler pass, memory, generation) run once, apart
from the timing pass; their one-off seconds are shown next to one plain call.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from accel.core.calibration import calibrated_machine
from accel.core.loading import find_target
from accel.core.measure import compare_interleaved
from accel.profiling.data import ProfileData
from accel.profiling.hardware import hardware_passes
from accel.profiling.stages import _end_to_end_pass

EXAMPLES = Path(__file__).parent.parent / "examples"
SOURCE_CASES = ("image_pipeline.py", "request_stream.py", "sequence_encoder.py")
INPUT_CASES = ("wide_mlp.py", "conv_net.py", "decoder_lm.py")
BATCHES = 4
CALLS = 5
NO_BUDGET = 1e9


def source_pair(pipeline):
    def plain() -> None:
        for batch in pipeline.loader(limit_batches=BATCHES):
            pipeline.forward(batch)

    def timed() -> None:
        _end_to_end_pass(pipeline, BATCHES * pipeline.batch_size, NO_BUDGET, time.perf_counter, lambda: None)

    return plain, timed


def input_pair(pipeline):
    batch = pipeline.inputs

    def plain() -> None:
        for _ in range(CALLS):
            pipeline.forward(batch)

    def timed() -> None:
        samples = []
        for _ in range(CALLS):
            t0 = time.perf_counter()
            pipeline.forward(batch)
            samples.append(time.perf_counter() - t0)

    return plain, timed


def instrumentation_seconds_per_batch(repeats: int = 100_000) -> float:
    """What the timing pass adds per batch: four clock reads, arithmetic and one append."""
    clock, samples = time.perf_counter, []
    began = clock()
    for _ in range(repeats):
        t0 = clock()
        t1 = clock()
        t2 = clock()
        samples.append(t2 - t0 + (t1 - t0) * 0 + clock() * 0)
    return (clock() - began) / repeats


def main() -> None:
    machine = calibrated_machine()
    torch.set_num_threads(1)
    per_batch = instrumentation_seconds_per_batch()
    rows = []
    for name in SOURCE_CASES + INPUT_CASES:
        pipeline = find_target(EXAMPLES / name)
        plain, timed = source_pair(pipeline) if name in SOURCE_CASES else input_pair(pipeline)
        with torch.inference_mode():
            comparison = compare_interleaved(plain, timed, warmup=1, min_rounds=5, max_rounds=12, budget_seconds=20.0)
            began = time.perf_counter()
            hardware_passes(pipeline, ProfileData(target=name), machine)
            passes = time.perf_counter() - began
        overhead = 1.0 / comparison.speedup - 1.0
        low, high = (1.0 / comparison.speedup_ci[1] - 1.0, 1.0 / comparison.speedup_ci[0] - 1.0)
        batches = BATCHES if name in SOURCE_CASES else CALLS
        bound = per_batch * batches / comparison.baseline.median
        rows.append((name, comparison.baseline.median, comparison.candidate.median, overhead, low, high, bound, passes))
    print(
        f"{'example':<22}{'plain s':>10}{'timed s':>10}{'overhead':>10}{'95% CI':>20}{'bound':>10}{'hw passes s':>13}"
    )
    for name, plain_s, timed_s, overhead, low, high, bound, passes in rows:
        print(
            f"{name:<22}{plain_s:>10.4f}{timed_s:>10.4f}{overhead:>+10.1%}{f'[{low:+.1%}, {high:+.1%}]':>20}"
            f"{bound:>10.4%}{passes:>13.2f}"
        )
    overheads = sorted(row[3] for row in rows)
    print(
        f"timing pass adds {per_batch * 1e6:.2f} us per batch; median measured overhead "
        f"{overheads[len(overheads) // 2]:+.1%}, largest bound {max(row[6] for row in rows):.4%} (target < 10%)"
    )
