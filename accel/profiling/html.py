"""The HTML report: one self-contained page (no network, no script needed) rendered from a report's JSON.

`render_html(report_dict)` is pure: it returns the page as a string; the caller writes it. Everything
is rendered here, on the server side: a summary naming the bottleneck and the slowest layer, the stage
breakdown, the roofline chart (accel.profiling.html_roofline) with the top layers and ops beside it
(accel.profiling.top, the same rows the terminal shows), and the findings with their evidence as
text. The report data is also embedded as JSON for tools that read the page.
"""

from __future__ import annotations

import html
import json
from typing import Any

from accel.profiling.html_evidence import evidence_html, format_seconds
from accel.profiling.html_roofline import roofline_svg
from accel.profiling.top import ABOVE_ROOF_NOTE, SECTIONS, GroupRate, format_rate, top_groups

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1500px;padding:0 16px;color:#222}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}h3{font-size:14px;margin:12px 0 6px}
.muted{color:#777}.bar{background:#3b82f6;height:14px;border-radius:2px}
table{border-collapse:collapse}td,th{padding:3px 10px;text-align:left;border-bottom:1px solid #eee;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}.bad{color:#dc2626}
.finding{border-left:4px solid #ccc;padding:6px 12px;margin:10px 0;background:#fafafa}
.high{border-color:#dc2626}.medium{border-color:#d97706}.low{border-color:#0891b2}.info{border-color:#9ca3af}
table.evidence td{font-size:12px;padding:1px 8px}table.evidence table td{border:none}
.summary{background:#f3f4f6;padding:8px 12px;margin:12px 0}
.where{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}.where>svg{flex:0 0 auto;max-width:100%}.where>div{flex:1 1 400px}
svg text{font-size:11px;fill:#444}.legend span{margin-right:14px}
"""


def _embed_json(data: Any) -> str:
    """JSON safe inside a <script> element: no "</" can close it early."""
    return json.dumps(data, default=str).replace("</", "<\\/").replace("<!--", "<\\!--")


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _pct(share: float) -> str:
    return f"{share * 100:.1f}%"


def summary_html(report: dict[str, Any]) -> str:
    """What the page says first: the bottleneck, where the model's time goes, the best cure."""
    findings = report.get("findings", [])
    primary = report.get("primary", "none")
    lines = [f"Bottleneck: <b>{_esc(primary)}</b>." if primary != "none" else "No bottleneck above low severity."]
    best = next((f for f in findings if f.get("kind") == primary), None)
    if best and best.get("recommendations"):
        lines.append(f"Best cure to try: <b>{_esc(best['recommendations'][0])}</b>.")
    layers = top_groups(report, "layers", 1)
    if layers:
        top = layers[0]
        lines.append(
            f"Slowest layer: <b>{_esc(top.label)}</b>, {_pct(top.share)} of a model call"
            + (
                f", at {format_rate(top.achieved_rate)} {top.rate_unit}: {top.roof_fraction:.0%} of its "
                f"{top.bound} roof ({format_rate(top.roof_rate)} {top.rate_unit})."
                if top.calibrated
                else "."
            )
        )
    return '<p class="summary" id="summary">' + " ".join(lines) + "</p>"


def stages_html(report: dict[str, Any]) -> str:
    rows = ["<tr><th>stage</th><th>per sample</th><th>share</th><th></th></tr>"]
    for stage in report.get("stages", []):
        width = max(1.0, stage["share"] * 100)
        rows.append(
            f"<tr><td>{_esc(stage['name'])}</td><td class=num>{format_seconds(stage['per_sample_seconds'])}</td>"
            f'<td class=num>{_pct(stage["share"])}</td><td style="width:420px">'
            f'<div class="bar" style="width:{width:.1f}%"></div></td></tr>'
        )
    return '<table id="stages">' + "".join(rows) + "</table>"


def top_table_html(section: str, rows: list[GroupRate]) -> str:
    """The same table as the terminal's: share, achieved rate of its roof, the roof, the cures."""
    noun = "layer" if section == "layers" else "op"
    head = f"<tr><th>{noun}</th><th>share</th><th>achieved (of roof)</th><th>roof</th><th>cure</th></tr>"
    body = []
    for row in rows:
        css = ' class="num bad"' if row.above_roof else " class=num"
        note = f"<br><small>{ABOVE_ROOF_NOTE}</small>" if row.above_roof else ""
        cures = ", ".join(row.cures) if row.cures else "-"
        source = f' title="from the {_esc(row.cure_kind)} finding"' if row.cure_kind else ""
        body.append(
            f"<tr><td>{_esc(row.label)}</td><td class=num>{_pct(row.share)}</td>"
            f"<td{css}>{_esc(row.achieved_text)}{note}</td><td>{_esc(row.roof_text)}</td>"
            f"<td{source}>{_esc(cures)}</td></tr>"
        )
    return f'<div><h3>Top {section}</h3><table class="top" id="top-{section}">{head}{"".join(body)}</table></div>'


def no_roofline_html(report: dict[str, Any]) -> str:
    """Why there is no chart: a script's loop is timed, not counted op by op; or a pass was skipped."""
    if report.get("mode") == "script":
        why = "a training script is measured as a loop (time in the DataLoader vs the step), not op by op"
    else:
        skipped = report.get("hardware_passes_skipped") or {}
        why = "; ".join(f"{name} pass skipped: {reason}" for name, reason in skipped.items())
        why = why or "the cost pass measured no layer with FLOPs, bytes and time"
    return f'<p class="muted" id="no-roofline">No roofline for this report: {_esc(why)}.</p>'


def where_html(report: dict[str, Any]) -> str:
    """The roofline chart with the top layers and ops tables beside it."""
    chart = roofline_svg(report)
    tables = "".join(top_table_html(section, rows) for section in SECTIONS if (rows := top_groups(report, section)))
    if not chart and not tables:
        return no_roofline_html(report)
    legend = (
        '<div class="muted legend"><span style="color:#3b82f6">● layer</span><span style="color:#ea580c">● op</span>'
        "ceilings from calibration (bandwidth slope, then peak GFLOP/s per dtype); point size: time; "
        f'<span class="bad">ringed: {ABOVE_ROOF_NOTE}</span></div>'
    )
    return (legend if chart else no_roofline_html(report)) + f'<div class="where">{chart}<div>{tables}</div></div>'


def findings_html(report: dict[str, Any]) -> str:
    parts = []
    for f in report.get("findings", []):
        tries = f"<p>try: {_esc(', '.join(f['recommendations']))}</p>" if f.get("recommendations") else ""
        parts.append(
            f'<div class="finding {_esc(f["severity"])}"><b>{_esc(f["severity"])} · {_esc(f["kind"])} · '
            f"impact {_pct(f['impact'])}</b><p>{_esc(f['summary'])}</p>{tries}"
            f"<details><summary>evidence</summary>{evidence_html(f.get('evidence') or {})}</details></div>"
        )
    return "".join(parts) or "<p>No findings.</p>"


def render_html(report: dict[str, Any]) -> str:
    """The self-contained HTML page for a report (its `to_dict()` form)."""
    machine = report.get("machine", {})
    title = _esc(f"accel profile: {report.get('target', '')}")
    facts = _esc(
        f"{machine.get('device_name', '?')} ({machine.get('device', '?')}, {machine.get('cores', '?')} cores) · "
        f"{report.get('mode', 'pipeline')} · "
        f"{report.get('throughput', {}).get('samples_per_s', 0.0):,.1f} samples/s"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_STYLE}</style></head>
<body>
<h1>{title}</h1>
<div class="muted">{facts}</div>
{summary_html(report)}
<h2>Stages</h2>
{stages_html(report)}
<h2>Where the model's time goes</h2>
{where_html(report)}
<h2>Findings</h2>
<div id="findings">{findings_html(report)}</div>
<script type="application/json" id="accel-data">{_embed_json(report)}</script>
</body></html>
"""
