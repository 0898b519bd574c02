"""Gate reports for CI: JUnit XML, a Markdown summary and JSON. Pure functions returning strings.

JUnit has one testcase per metric: a FAIL is a `<failure>`, an INVALID an `<error>`, a WARN passes
with the reason in `<system-out>`. The Markdown table is sorted most severe first, ready for
`$GITHUB_STEP_SUMMARY` or a merge-request note.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from typing import Any

from accel.core.io import json_default
from accel.gating.run import GateResult
from accel.gating.verdicts import MetricVerdict, Verdict, sort_by_severity

VERDICT_MARK = {
    Verdict.FAIL: "❌ fail",
    Verdict.INVALID: "⚠️ invalid",
    Verdict.REBASELINE: "🔁 re-baseline",
    Verdict.WARN: "🟡 warn",
    Verdict.IMPROVED: "🟢 improved",
    Verdict.PASS: "✅ pass",
}


def format_change(fraction: float) -> str:
    if math.isnan(fraction):
        return "n/a"
    if math.isinf(fraction):
        return "+inf%" if fraction > 0 else "-inf%"
    return f"{fraction * 100:+.1f}%"


def format_value(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric.endswith("_seconds"):
        return f"{value * 1e3:.3f} ms" if value < 1 else f"{value:.3f} s"
    if metric.endswith("_bytes") or metric == "bytes_moved":
        for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
            if abs(value) >= size:
                return f"{value / size:.2f} {unit}"
        return f"{value:.0f} B"
    return f"{value:,.0f}"


def format_interval(verdict: MetricVerdict) -> str:
    low, high = verdict.interval
    if low == high:
        return "exact"
    return f"{format_change(low)} .. {format_change(high)}"


def format_noise(verdict: MetricVerdict) -> str:
    """The noise floor a timed verdict was decided under; '-' for exact counts."""
    return "-" if verdict.noise is None else f"±{verdict.noise * 100:.1f}%"


def junit_xml(result: GateResult) -> str:
    """One testsuite, one testcase per metric; valid JUnit for GitHub, GitLab and Jenkins."""
    verdicts = list(result.verdicts)
    suite = ET.Element(
        "testsuite",
        {
            "name": f"accel gate {result.target}",
            "tests": str(len(verdicts)),
            "failures": str(sum(v.verdict is Verdict.FAIL for v in verdicts)),
            "errors": str(sum(v.verdict in (Verdict.INVALID, Verdict.REBASELINE) for v in verdicts)),
            "skipped": "0",
            "time": f"{result.elapsed_seconds:.3f}",
        },
    )
    for v in verdicts:
        case = ET.SubElement(
            suite, "testcase", {"classname": f"accel.gating.verdicts.{result.target}", "name": v.metric, "time": "0"}
        )
        detail = (
            f"{v.metric}: {v.verdict.value}: change {format_change(v.change)}, 95% CI {format_interval(v)}, "
            f"noise {format_noise(v)}, threshold {v.threshold * 100:.1f}%, samples {v.samples}. {v.reason}"
        )
        if v.verdict is Verdict.FAIL:
            ET.SubElement(
                case, "failure", {"message": f"{v.metric} regressed {format_change(v.change)}", "type": "regression"}
            ).text = detail
        elif v.verdict in (Verdict.INVALID, Verdict.REBASELINE):
            ET.SubElement(
                case, "error", {"message": f"{v.metric}: invalid measurement", "type": "invalid"}
            ).text = detail
        else:
            ET.SubElement(case, "system-out").text = detail
    root = ET.Element("testsuites", {"name": "accel gate"})
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def markdown(result: GateResult) -> str:
    """A summary table, most severe first."""
    lines = [
        f"### accel gate: `{result.target}` — **{result.verdict.value.upper()}**",
        "",
        f"Compared with `{result.reference}` ({result.mode}); "
        + (
            f"{result.pairs} process {'pairs' if result.mode == 'against' else 'replicates'}."
            if result.pairs
            else "counts only."
        ),
        "",
        "| verdict | metric | baseline | candidate | change | 95% CI | noise | threshold |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in sort_by_severity(result.verdicts):
        lines.append(
            f"| {VERDICT_MARK[v.verdict]} | {v.metric} | {format_value(v.metric, v.baseline_value)} | "
            f"{format_value(v.metric, v.candidate_value)} | {format_change(v.change)} | "
            f"{format_interval(v)} | {format_noise(v)} | {v.threshold * 100:.1f}% |"
        )
    notes = [v for v in sort_by_severity(result.verdicts) if v.verdict is not Verdict.PASS]
    if notes:
        lines.append("")
        lines += [f"- **{v.metric}** ({v.verdict.value}): {v.reason}" for v in notes]
    if result.proposed_baseline:
        lines += ["", f"Counts dropped: an updated baseline was written to `{result.proposed_baseline}` for review."]
    return "\n".join(lines) + "\n"


def json_text(result: GateResult) -> str:
    """Everything: raw samples, pairs, environments, every verdict's estimate and interval."""
    return json.dumps(finite(result.to_dict()), indent=2, default=json_default, allow_nan=False) + "\n"


def finite(value: Any) -> Any:
    """NaN becomes null and infinities strings: strict JSON has neither."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
