"""The report model: plain dataclasses serialized to the public JSON (`accel.profile/1`).

Numbers are kept in base units (seconds, bytes); renderers choose display units.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from accel.core.machine import Machine

PROFILE_SCHEMA = "accel.profile/1"

SEVERITIES = ("high", "medium", "low", "info")

# Severity comes from impact, the fraction of end-to-end time the best cure is predicted to save.
# TensorFlow's profiler calls a program moderately input-bound at 5% and highly at 20% of step time;
# accel grades the predicted saving rather than the share, and a saving is only worth a user's
# attention once it clears run-to-run noise by a wide margin: 40% of the time is "high" (the
# pipeline gets 1.7x faster or more), 15% "medium" (clearly beyond the few percent of noise on a
# shared machine), 3% "low" (measurable, rarely worth a change on its own), below that "info".
HIGH_IMPACT = 0.40
MEDIUM_IMPACT = 0.15
LOW_IMPACT = 0.03


# The valid finding kinds: one per registered analyzer, added by accel.profiling.analyzers.register
# (this data module cannot import the analyzers, which build findings from it). The analyzers package
# is loaded with accel itself, so every kind is known before a finding is built or read back.
_FINDING_KINDS: set[str] = set()


def finding_kinds() -> tuple[str, ...]:
    return tuple(sorted(_FINDING_KINDS))


def add_finding_kind(kind: str) -> None:
    _FINDING_KINDS.add(kind)


def remove_finding_kind(kind: str) -> None:
    _FINDING_KINDS.discard(kind)


def severity_for(impact: float) -> str:
    if impact >= HIGH_IMPACT:
        return "high"
    if impact >= MEDIUM_IMPACT:
        return "medium"
    if impact >= LOW_IMPACT:
        return "low"
    return "info"


def _check_fraction(name: str, value: float) -> None:
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        raise ValueError(f"{name} must lie in 0..1, got {value}")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of the pipeline: time per pass over the measured samples, and its share."""

    name: str
    seconds: float
    share: float
    per_sample_seconds: float = 0.0
    samples_per_s: float = 0.0

    def __post_init__(self) -> None:
        if self.seconds < 0:
            raise ValueError(f"Stage {self.name}: seconds must be >= 0, got {self.seconds}")
        _check_fraction(f"Stage {self.name}: share", self.share)


@dataclasses.dataclass(frozen=True)
class Finding:
    kind: str
    severity: str
    share: float
    impact: float
    summary: str
    evidence: dict[str, Any] = dataclasses.field(default_factory=dict)
    recommendations: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        kinds = finding_kinds()
        if self.kind not in kinds:
            raise ValueError(f"unknown finding kind {self.kind!r}; valid: {', '.join(kinds)}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}; valid: {', '.join(SEVERITIES)}")
        _check_fraction(f"Finding {self.kind}: share", self.share)
        _check_fraction(f"Finding {self.kind}: impact", self.impact)

    @classmethod
    def from_impact(
        cls,
        kind: str,
        *,
        share: float,
        impact: float,
        summary: str,
        evidence: dict[str, Any] | None = None,
        recommendations: list[str] | None = None,
    ) -> "Finding":
        """A finding whose severity follows from its impact (clamped to 0..1)."""
        share = min(max(share, 0.0), 1.0)
        impact = min(max(impact, 0.0), 1.0)
        return cls(
            kind=kind,
            severity=severity_for(impact),
            share=share,
            impact=impact,
            summary=summary,
            evidence=evidence or {},
            recommendations=recommendations or [],
        )


@dataclasses.dataclass(frozen=True)
class Report:
    """What `accel profile` found. `extra` holds sections later features add (ops, layers, memory)."""

    target: str
    machine: Machine | None
    stages: list[Stage]
    samples_per_s: float
    findings: list[Finding]
    latency: dict[str, float] = dataclasses.field(default_factory=dict)
    mode: str = "pipeline"
    trace_dir: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    schema: str = PROFILE_SCHEMA

    @property
    def primary(self) -> str:
        """The kind of the finding with the highest impact among medium and high ones, or "none"."""
        serious = [f for f in self.findings if f.severity in ("high", "medium")]
        if not serious:
            return "none"
        return max(serious, key=lambda f: f.impact).kind

    def finding(self, kind: str) -> Finding | None:
        return next((f for f in self.findings if f.kind == kind), None)

    def __repr__(self) -> str:  # short: the sections and evidence are in to_dict()
        kinds = [f"{f.kind}:{f.severity}" for f in self.findings]
        return (
            f"Report(target={self.target!r}, mode={self.mode!r}, primary={self.primary!r}, "
            f"samples_per_s={self.samples_per_s:.4g}, stages={len(self.stages)}, findings={kinds})"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "target": self.target,
            "mode": self.mode,
            "machine": self.machine.to_dict() if self.machine is not None else {},
            "stages": [dataclasses.asdict(s) for s in self.stages],
            "throughput": {"samples_per_s": self.samples_per_s},
            "latency": self.latency,
            "findings": [dataclasses.asdict(f) for f in self.findings],
            "primary": self.primary,
            "trace_dir": self.trace_dir,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Report":
        if data.get("schema") != PROFILE_SCHEMA:
            raise ValueError(f"not an {PROFILE_SCHEMA} report (schema: {data.get('schema')!r})")
        known = {
            "schema",
            "target",
            "mode",
            "machine",
            "stages",
            "throughput",
            "latency",
            "findings",
            "primary",
            "trace_dir",
        }
        return cls(
            target=data["target"],
            machine=Machine.from_dict(data["machine"]) if data.get("machine") else None,
            stages=[Stage(**s) for s in data.get("stages", [])],
            samples_per_s=data.get("throughput", {}).get("samples_per_s", 0.0),
            findings=[Finding(**f) for f in data.get("findings", [])],
            latency=data.get("latency", {}),
            mode=data.get("mode", "pipeline"),
            trace_dir=data.get("trace_dir"),
            extra={k: v for k, v in data.items() if k not in known},
        )
