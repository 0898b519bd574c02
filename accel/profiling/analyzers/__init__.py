"""Analyzers: one module per finding kind, each declared and registered by `register`.

An analyzer is a pure function `analyze(data: ProfileData, machine: Machine) -> list[Finding]`: it
reads measurements and does no timing, so it can be tested on recorded measurements. Its
declaration (AnalyzerSpec) says everything else about it: the finding kind it names, the role that
kind plays in the time accounting, the ProfileData sections it reads and the optimizers it may
recommend. Every list of kinds (the report's valid kinds, the causes, the op classes, a recipe's
`findings: any`) is derived from these declarations. Every module in this package is imported
here, which registers it.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import pkgutil
from typing import Callable

from accel.core.machine import Machine
from accel.core.registry import Registry
from accel.profiling.data import ProfileData
from accel.profiling.report import Finding, add_finding_kind, remove_finding_kind

Analyzer = Callable[[ProfileData, Machine], list[Finding]]


class Role(str, enum.Enum):
    """The part a finding kind plays when shares are added up (see without_double_counting)."""

    # A cause of wasted model time (the padding elements, the repeated inputs, the recomputed
    # prefix): its share is the model time it explains.
    CAUSE = "cause"
    # A split of the model's time by op class (below the ridge, above it, above the roofline): the
    # classes are disjoint, but they cover the same model time the causes explain.
    OP_CLASS = "op_class"
    # Anything else: time outside the model (data loading), bytes rather than time (memory peak),
    # other ranks' time (a straggler).
    OTHER = "other"


PROFILE_SECTIONS = tuple(f.name for f in dataclasses.fields(ProfileData))


@dataclasses.dataclass(frozen=True)
class AnalyzerSpec:
    """What an analyzer declares about itself; calling it runs the analyzer."""

    kind: str
    role: Role
    analyze: Analyzer
    # The ProfileData fields (the measured sections) the analyzer reads.
    reads: tuple[str, ...] = ()
    # Every optimizer name its findings may recommend or predict a saving for; accel.optimizing.cures
    # checks each one is a registered optimizer that declares it cures this kind.
    recommends: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.role, Role):
            raise ValueError(f"analyzer {self.kind!r}: role must be a Role, got {self.role!r}")
        unknown = [name for name in self.reads if name not in PROFILE_SECTIONS]
        if unknown:
            raise ValueError(
                f"analyzer {self.kind!r} reads unknown ProfileData field {unknown[0]!r}; "
                f"valid: {', '.join(PROFILE_SECTIONS)}"
            )

    def __call__(self, data: ProfileData, machine: Machine) -> list[Finding]:
        return self.analyze(data, machine)


ANALYZERS: Registry[AnalyzerSpec] = Registry("analyzer")


def register(
    kind: str, role: Role = Role.OTHER, *, reads: tuple[str, ...] = (), recommends: tuple[str, ...] = ()
) -> Callable[[Analyzer], Analyzer]:
    """Decorator: declare `analyze` as the analyzer of finding kind `kind` and register it."""

    def decorator(analyze: Analyzer) -> Analyzer:
        ANALYZERS.add(kind, AnalyzerSpec(kind=kind, role=role, analyze=analyze, reads=reads, recommends=recommends))
        add_finding_kind(kind)
        return analyze

    return decorator


def unregister(kind: str) -> None:
    """Remove an analyzer (a test's planted one)."""
    ANALYZERS.remove(kind)
    remove_finding_kind(kind)


def finding_kinds() -> tuple[str, ...]:
    """Every registered finding kind."""
    return tuple(ANALYZERS.names())


def kinds_with_role(role: Role) -> tuple[str, ...]:
    return tuple(name for name, spec in ANALYZERS.items() if spec.role is role)


def cause_kinds() -> tuple[str, ...]:
    return kinds_with_role(Role.CAUSE)


def op_class_kinds() -> tuple[str, ...]:
    return kinds_with_role(Role.OP_CLASS)


def analyze(data: ProfileData, machine: Machine, names: list[str] | None = None) -> list[Finding]:
    """Run the analyzers (all by default) and return their findings, highest impact first."""
    findings: list[Finding] = []
    for name in names or ANALYZERS.names():
        spec = ANALYZERS.get(name)
        findings.extend(with_predicted_saving(_declared(spec, f)) for f in spec(data, machine))
    return sorted(without_double_counting(findings), key=lambda f: (-f.impact, f.kind))


def _declared(spec: AnalyzerSpec, finding: Finding) -> Finding:
    """A finding names only its analyzer's kind and the optimizers the analyzer declared: a name
    missing from the declaration would escape the check that each one cures the kind."""
    if finding.kind != spec.kind:
        raise ValueError(f"analyzer {spec.kind!r} returned a finding of kind {finding.kind!r}")
    named = [*finding.recommendations, *finding.evidence.get("predicted_saving", {})]
    undeclared = sorted({name for name in named if name not in spec.recommends})
    if undeclared:
        raise ValueError(
            f"analyzer {spec.kind!r} recommends {', '.join(undeclared)}, missing from its declaration "
            f"(recommends: {', '.join(spec.recommends) or 'none'})"
        )
    return finding


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
    op_classes, causes_kinds = op_class_kinds(), cause_kinds()
    op_class = [f for f in findings if f.kind in op_classes]
    caused = sum(f.share for f in findings if f.kind in causes_kinds)
    model_share = max((f.evidence.get("model_time_share", 0.0) for f in op_class), default=0.0)
    if not op_class or caused <= 0 or model_share <= 0:
        return findings
    left = max(1.0 - caused / model_share, 0.0)
    causes = [f for f in findings if f.kind in causes_kinds and f.impact > 0]
    cause_saving = min(sum(f.impact for f in causes), model_share)
    after = max(1.0 - cause_saving / model_share, 0.0)
    return [_composed(f, left, causes, cause_saving, after) if f.kind in op_classes else f for f in findings]


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


def _best_cure(finding: Finding) -> str:
    """The cure a finding predicts the most for (a KV cache for generation, bucketing for padding)."""
    predicted = finding.evidence.get("predicted_saving") or {}
    if predicted:
        return max(predicted, key=lambda cure: predicted[cure])
    return finding.recommendations[0] if finding.recommendations else finding.kind


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
