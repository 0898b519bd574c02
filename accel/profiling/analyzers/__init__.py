"""Analyzers: one module per finding kind, each registered by name.

An analyzer is a pure function `analyze(data: ProfileData, machine: Machine) -> list[Finding]`: it
reads measurements and does no timing, so it can be tested on recorded measurements. Every module
in this package is imported here, which registers it.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Callable

from accel.core.machine import Machine
from accel.core.registry import Registry
from accel.profiling.data import ProfileData
from accel.profiling.report import Finding

Analyzer = Callable[[ProfileData, Machine], list[Finding]]

# Findings that name a cause of wasted model time: the padding elements, the repeated inputs, the
# recomputed prefix. Each one's share is the model time it explains.
CAUSE_KINDS = ("padding", "repeated_inputs", "generation")
# Findings that split the model's time by op class (below the ridge, above it, above the roofline).
# The classes are disjoint, but they cover the same model time the causes explain.
OP_CLASS_KINDS = ("memory_bandwidth", "compute_bound", "overhead")

ANALYZERS: Registry[Analyzer] = Registry("analyzer")


def analyze(data: ProfileData, machine: Machine, names: list[str] | None = None) -> list[Finding]:
    """Run the analyzers (all by default) and return their findings, highest impact first."""
    findings: list[Finding] = []
    for name in names or ANALYZERS.names():
        findings.extend(with_predicted_saving(f) for f in ANALYZERS.get(name)(data, machine))
    return sorted(without_double_counting(findings), key=lambda f: (-f.impact, f.kind))


def with_predicted_saving(finding: Finding) -> Finding:
    """Every finding's evidence names its cures' predicted savings, {optimizer: share of end-to-end
    time}, so `accel optimize` can print them beside what it measures. An analyzer that predicts
    per cure fills it; otherwise the impact is the first recommendation's prediction."""
    if "predicted_saving" in finding.evidence:
        return finding
    saving = {finding.recommendations[0]: finding.impact} if finding.recommendations and finding.impact > 0 else {}
    return dataclasses.replace(finding, evidence={**finding.evidence, "predicted_saving": saving})


def without_double_counting(findings: list[Finding]) -> list[Finding]:
    """Shrink the op-class findings' shares to the model time the causes leave unexplained, and
    say how their cures compose.

    A padded batch's padding time is also memory- or compute-bound time; counted in both, the
    shares would add up to more than the model's time. Each op-class finding keeps its impact (its
    cure's predicted saving on its own) and records the share it had before in its evidence.

    Composition: the causes' cures (bucketing, a result cache, a KV cache) remove model work, and
    an op-class cure (bf16, int8, a graph runtime) then speeds up the model time that is left. With
    model share m and the causes' savings p, a cure that saves i on its own saves i * (1 - p / m)
    after them, and p + i * (1 - p / m) together; the evidence and the summary say so.
    """
    op_class = [f for f in findings if f.kind in OP_CLASS_KINDS]
    caused = sum(f.share for f in findings if f.kind in CAUSE_KINDS)
    model_share = max((f.evidence.get("model_time_share", 0.0) for f in op_class), default=0.0)
    if not op_class or caused <= 0 or model_share <= 0:
        return findings
    left = max(1.0 - caused / model_share, 0.0)
    causes = [f for f in findings if f.kind in CAUSE_KINDS and f.impact > 0]
    cause_saving = min(sum(f.impact for f in causes), model_share)
    after = max(1.0 - cause_saving / model_share, 0.0)
    return [_composed(f, left, causes, cause_saving, after) if f.kind in OP_CLASS_KINDS else f for f in findings]


def _composed(finding: Finding, left: float, causes: list[Finding], cause_saving: float, after: float) -> Finding:
    evidence = {**finding.evidence, "share_before_causes": finding.share, "share_left_by_causes": left}
    summary = finding.summary
    if causes and finding.impact > 0:
        first = [_best_cure(f) for f in causes]
        evidence["composition"] = {
            "after": first,
            "cause_saving": cause_saving,
            "impact_after_causes": finding.impact * after,
            "combined_impact": cause_saving + finding.impact * after,
        }
        cure = finding.recommendations[0] if finding.recommendations else finding.kind
        summary += (
            f"; composed: after {' and '.join(first)} ({cause_saving:.0%}), {cure} on what is left saves "
            f"{finding.impact * after:.0%} more ({cause_saving + finding.impact * after:.0%} together)"
        )
    return dataclasses.replace(finding, share=finding.share * left, evidence=evidence, summary=summary)


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def _best_cure(finding: Finding) -> str:
    """The cure a finding predicts the most for (a KV cache for generation, bucketing for padding)."""
    predicted = finding.evidence.get("predicted_saving") or {}
    if predicted:
        return max(predicted, key=lambda cure: predicted[cure])
    return finding.recommendations[0] if finding.recommendations else finding.kind
