"""`python -m benchmarks embedding`: the DLRM-style recommender (tests/real/dlrm_recommender.py)
before and after `quantize.embedding`, side by side in one run.

Per row: the model's seconds per call on one 512-sample batch (median of interleaved rounds, the
speedup with its 95% CI: accel.core.measure.compare_interleaved), the bytes its tables occupy, and
the guard's view of the outputs (centered cosine, relative error) on that batch. Rows: the 128 MB
tables the corpus pipeline has (4x a 32 MB last level cache) in int8 and in float16, and the control
with tables the cache holds (5,000 rows), where the optimizer says why it does not apply.
One torch intra-op thread on both sides.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from accel.core.machine import describe_machine
from accel.core.measure import compare_interleaved, thread_count
from accel.optimizing.optimizers import OPTIMIZERS, Context, make_config
from accel.optimizing.optimizers.quantize_embedding import stored_bytes
from accel.optimizing.search.fidelity import compare_outputs

RECOMMENDER = Path(__file__).resolve().parent.parent / "tests" / "real" / "dlrm_recommender.py"
CONTROL_ROWS = 5_000
NAME = "quantize.embedding"


def _recommender() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dlrm_recommender", RECOMMENDER)
    if spec is None or spec.loader is None:
        raise ImportError(RECOMMENDER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table_bytes(model: Any) -> int:
    return sum(stored_bytes(table) for table in model.tables)


def case(module: ModuleType, rows: int, dtype: str, context: Context) -> tuple:
    pipeline = module.pipeline(rows=rows)
    optimizer = OPTIMIZERS.get(NAME)
    label = f"{rows:,} rows x {module.SPARSE_FEATURES} tables, {dtype}"
    before = _table_bytes(pipeline.model)
    why_not = optimizer.applicable(pipeline, context)
    if why_not is not None:
        return (label, "-", "-", "-", f"{before / 1e6:.1f} MB", "-", f"not applicable: {why_not}")
    applied = optimizer.apply(pipeline, make_config(optimizer, {"dtype": dtype}), context)
    batch = pipeline.example_batch()
    model, cured = pipeline.model, applied.pipeline.model

    def baseline() -> None:
        with torch.inference_mode():
            model(**batch)

    def candidate() -> None:
        with torch.inference_mode():
            cured(**batch)

    comparison = compare_interleaved(baseline, candidate, warmup=3, min_rounds=15, budget_seconds=20)
    with torch.inference_mode():
        fidelity = compare_outputs(model(**batch), cured(**batch))
    low, high = comparison.speedup_ci
    return (
        label,
        f"{comparison.baseline.median * 1e3:.2f} ms",
        f"{comparison.candidate.median * 1e3:.2f} ms",
        f"{comparison.speedup:.2f}x [{low:.2f}, {high:.2f}]",
        f"{before / 1e6:.1f} MB",
        f"{_table_bytes(cured) / 1e6:.1f} MB",
        f"cos {fidelity.cosine:.6f}, rel err {fidelity.relative_error:.1e}; one-time {applied.setup_seconds:.2f} s",
    )


def main() -> None:
    module = _recommender()
    context = Context(machine=describe_machine(), workdir=Path(tempfile.mkdtemp(prefix="accel-bench-")))
    with thread_count(1):
        rows = [
            case(module, module.ROWS, "int8", context),
            case(module, module.ROWS, "fp16", context),
            case(module, CONTROL_ROWS, "int8", context),
        ]
    header = ("tables", "before/call", "after/call", "speedup [95% CI]", "table bytes", "after", "notes")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    load = os.getloadavg()[0]
    print(
        f"machine: {context.machine.cores} usable cores (load average {load:.1f} when done), torch {torch.__version__}, "
        f"1 intra-op thread, batch {module.BATCH_SIZE} x {module.SPARSE_FEATURES} bags of {module.BAG_SIZE} ids"
    )
    for row in [header] + rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())


if __name__ == "__main__":
    main()
