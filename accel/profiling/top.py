"""Where a model's time goes: the cost pass's layers and ops with their rate, their roof and their cure.

Pure over a report's JSON form (`Report.to_dict()`): it reads the cost pass's per-layer and per-op
groups (`layers`, `ops`), the model call's seconds (`cost.call_seconds`) and the findings, and
computes nothing that was not measured. A group's roof is its own roofline time (the larger of
FLOPs over the calibrated peak of each op's dtype and bytes over the calibrated bandwidth, summed
over its ops), so its achieved fraction of the roof is the same in GFLOP/s and in GB/s. The terminal
and the HTML report both render these rows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from accel.profiling.costmodel import DISPATCH_OVER_ROOFLINE, DISPATCH_ROOFLINE_SECONDS

# The layers and ops a report shows: past the fifth, a BERT-base profile's groups hold a few
# percent of the time each, and the tables must still read at 80 columns.
TOP_GROUPS = 5
# A group measured faster than its roofline time is above the calibrated roof. The roof is a
# measured peak, so some scatter is expected; any excess is flagged, since a point above the roof
# means the calibration or the op's time is wrong, not that the op beat the hardware.
ABOVE_ROOF_FRACTION = 1.0
ABOVE_ROOF_NOTE = "measured above the calibrated roof: distrust"

# The finding whose cures apply to a group, by what limits it. These are the op-class findings
# (Role.OP_CLASS): a group's time belongs to exactly one of them. tests/profiling/test_top.py
# checks each is a registered finding kind, so a renamed analyzer fails loudly here.
CURE_FINDING = {"dispatch": "overhead", "bandwidth": "memory_bandwidth", "compute": "compute_bound"}
SECTIONS = ("layers", "ops")


@dataclasses.dataclass(frozen=True)
class GroupRate:
    """One layer or op of the model call: its time, its rate, the roof that applies and its cure."""

    name: str
    calls: int
    seconds: float
    share: float  # of one model call
    flops: int
    bytes_moved: int
    roofline_seconds: float
    bound: str  # "bandwidth" or "compute": the roof its time mostly sits under
    dispatch_bound: bool  # its ops are too short for the hardware to matter
    cure_kind: str | None  # the finding whose recommendations apply, when it was reported
    cures: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return self.name or "(model)"

    @property
    def calibrated(self) -> bool:
        return self.roofline_seconds > 0

    @property
    def roof_text(self) -> str:
        """The roof that applies, in words: "bandwidth 27.9 GB/s", "compute 185 GFLOP/s"."""
        if not self.calibrated:
            return "none (no FLOPs, no bytes)" if not (self.flops or self.bytes_moved) else "uncalibrated"
        text = f"{self.bound} {format_rate(self.roof_rate)} {self.rate_unit}"
        return text + " (dispatch-bound)" if self.dispatch_bound else text

    @property
    def achieved_text(self) -> str:
        """The achieved rate in the roof's unit and its fraction of the roof ("4.41 GB/s 16%")."""
        text = f"{format_rate(self.achieved_rate)} {self.rate_unit}"
        if self.calibrated:
            text += f" {self.roof_fraction:.0%}" + ("!" if self.above_roof else "")
        return text

    @property
    def cure_text(self) -> str:
        """The best cure of the finding that covers this group, and how many more it names."""
        if not self.cures:
            return "-"
        return self.cures[0] + (f" +{len(self.cures) - 1}" if len(self.cures) > 1 else "")

    @property
    def flops_per_byte(self) -> float:
        return self.flops / self.bytes_moved if self.bytes_moved else 0.0

    @property
    def achieved_gflops(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds > 0 else 0.0

    @property
    def achieved_gbs(self) -> float:
        return self.bytes_moved / self.seconds / 1e9 if self.seconds > 0 else 0.0

    @property
    def roof_fraction(self) -> float:
        """Roofline time over measured time, not capped: above 1 the group beat its roof."""
        return self.roofline_seconds / self.seconds if self.seconds > 0 else 0.0

    @property
    def above_roof(self) -> bool:
        return self.roof_fraction > ABOVE_ROOF_FRACTION

    @property
    def rate_unit(self) -> str:
        return "GB/s" if self.bound == "bandwidth" else "GFLOP/s"

    @property
    def achieved_rate(self) -> float:
        return self.achieved_gbs if self.bound == "bandwidth" else self.achieved_gflops

    @property
    def roof_rate(self) -> float:
        """The rate the group would reach at its roofline time, in rate_unit; 0 when uncalibrated."""
        if not self.calibrated:
            return 0.0
        amount = self.bytes_moved if self.bound == "bandwidth" else self.flops
        return amount / self.roofline_seconds / 1e9


def _bound(group: dict[str, Any]) -> tuple[str, bool]:
    seconds = group.get("seconds", 0.0)
    bound = "bandwidth" if 2 * group.get("memory_bound_seconds", 0.0) >= seconds > 0 else "compute"
    calls = max(group.get("calls", 1), 1)
    roofline = group.get("roofline_seconds", 0.0)
    dispatch = 0 < roofline / calls < DISPATCH_ROOFLINE_SECONDS and seconds > DISPATCH_OVER_ROOFLINE * roofline
    return bound, dispatch


def group_rates(report: dict[str, Any], section: str) -> list[GroupRate]:
    """Every measured group of a section ("layers" or "ops"), slowest first."""
    if section not in SECTIONS:
        raise ValueError(f"unknown section {section!r}; valid: {', '.join(SECTIONS)}")
    groups = [g for g in report.get(section) or [] if g.get("seconds", 0.0) > 0]
    call_seconds = (report.get("cost") or {}).get("call_seconds") or sum(g["seconds"] for g in groups)
    findings = {f["kind"]: f for f in report.get("findings", [])}
    rows = []
    for group in groups:
        bound, dispatch = _bound(group)
        kind = CURE_FINDING["dispatch" if dispatch else bound]
        finding = findings.get(kind)
        cures = tuple(finding.get("recommendations", [])) if finding else ()
        rows.append(
            GroupRate(
                name=group.get("name", ""),
                calls=group.get("calls", 0),
                seconds=group["seconds"],
                share=min(group["seconds"] / call_seconds, 1.0) if call_seconds > 0 else 0.0,
                flops=group.get("flops", 0),
                bytes_moved=group.get("bytes_moved", 0),
                roofline_seconds=group.get("roofline_seconds", 0.0),
                bound=bound,
                dispatch_bound=dispatch,
                cure_kind=kind if cures else None,
                cures=cures,
            )
        )
    return sorted(rows, key=lambda row: -row.seconds)


def top_groups(report: dict[str, Any], section: str, limit: int = TOP_GROUPS) -> list[GroupRate]:
    return group_rates(report, section)[:limit]


def format_rate(value: float) -> str:
    """A rate with three significant figures, at most: 1,234 / 123 / 12.3 / 1.23 / 0.123."""
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"
