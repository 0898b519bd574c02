"""Predicted vs measured: each example's primary data-path finding, then its cure applied for real.

For every bundled example: `accel.profile` names the primary finding and predicts the saving of its
first recommendation; the cure is applied (the registered optimizer, or num_workers = cores for
loader.tune) and `Pipeline.run()` is timed against the baseline, interleaved.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import accel
from accel.core.loading import Script, find_target
from accel.core.machine import describe_machine
from accel.core.measure import compare_interleaved
from accel.optimizing.optimizers import OPTIMIZERS, Context, make_config

EXAMPLES = Path(__file__).parent.parent / "examples"
CASES = ("image_pipeline.py", "sequence_encoder.py", "request_stream.py")


def cured(pipeline: accel.Pipeline, name: str, context: Context) -> accel.Pipeline:
    if name == "loader.tune" and name not in OPTIMIZERS:
        return pipeline.replace(num_workers=context.machine.cores)
    optimizer = OPTIMIZERS.get(name)
    return optimizer.apply(pipeline, make_config(optimizer, {}), context).pipeline


def main() -> None:
    machine = describe_machine()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        context = Context(machine=machine, workdir=Path(workdir))
        for case in CASES:
            path = EXAMPLES / case
            report = accel.profile(path, budget_seconds=10.0)
            finding = report.finding(report.primary)
            pipeline = find_target(path)
            assert not isinstance(pipeline, Script)
            cure = finding.recommendations[0]
            predicted = finding.evidence["predicted_saving"][cure]
            candidate = cured(pipeline, cure, context)
            comparison = compare_interleaved(
                pipeline.run, candidate.run, min_rounds=5, max_rounds=15, budget_seconds=20.0
            )
            measured = 1.0 - 1.0 / comparison.speedup
            rows.append((case, report.primary, finding.impact, cure, predicted, measured, comparison.speedup_ci))
    print(f"machine: {machine.device_name}, {machine.cores} cores")
    print(f"{'example':<22}{'primary':<17}{'impact':>7}  {'cure':<15}{'predicted':>10}{'measured':>10}  speedup 95% CI")
    for case, primary, impact, cure, predicted, measured, (low, high) in rows:
        print(
            f"{case:<22}{primary:<17}{impact:>7.0%}  {cure:<15}{predicted:>10.0%}{measured:>10.0%}  {low:.2f}x..{high:.2f}x"
        )
