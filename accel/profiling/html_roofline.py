"""The HTML report's roofline chart, drawn here as an SVG string (no script needed to see it).

Log-log axes: arithmetic intensity (FLOP/byte) across, achieved GFLOP/s up. Each layer and op with
FLOPs, bytes and time is a point, its area the time it took. The ceilings come from calibration: the
bandwidth slope, then a flat roof per dtype. Labels are placed so that they never overlap: the
per-dtype roof labels sit in a margin right of the plot (where no line runs), pushed apart
vertically; the bandwidth label runs along its slope, lifted off the line. A point measured above
its own roof is ringed and says so.
"""

from __future__ import annotations

import dataclasses
import math
from html import escape
from typing import Any

from accel.profiling.top import ABOVE_ROOF_NOTE, SECTIONS, GroupRate, format_rate, group_rates

WIDTH, HEIGHT = 760, 400
LEFT, RIGHT, TOP, BOTTOM = 60, 150, 20, 45  # the right margin holds the roof labels
# A label line is 11px of text; two labels this far apart (px) cannot overlap.
LABEL_GAP = 14
# The bandwidth label's baseline sits this far (px) above its line, clear of the stroke.
SLOPE_LABEL_LIFT = 5
COLORS = {"fp32": "#111", "bf16": "#16a34a", "fp16": "#9333ea", "int8": "#ea580c"}
POINT_FILL = {"layers": "rgba(59,130,246,.6)", "ops": "rgba(234,88,12,.5)"}


@dataclasses.dataclass(frozen=True)
class Scale:
    """Log-log axes from data coordinates to SVG pixels."""

    xmin: float
    xmax: float
    ymin: float
    ymax: float

    def x(self, value: float) -> float:
        span = math.log10(self.xmax) - math.log10(self.xmin)
        return LEFT + (math.log10(value) - math.log10(self.xmin)) / span * (WIDTH - LEFT - RIGHT)

    def y(self, value: float) -> float:
        span = math.log10(self.ymax) - math.log10(self.ymin)
        return HEIGHT - BOTTOM - (math.log10(value) - math.log10(self.ymin)) / span * (HEIGHT - TOP - BOTTOM)


def _decade_below(value: float) -> float:
    return 10.0 ** math.floor(math.log10(value))


def _decade_above(value: float) -> float:
    return 10.0 ** math.ceil(math.log10(value))


def _scale(points: list[tuple[str, GroupRate]], bandwidth: float, peaks: dict[str, float]) -> Scale:
    xs = [row.flops_per_byte for _, row in points] + ([p / bandwidth for p in peaks.values()] if bandwidth else [])
    ys = [row.achieved_gflops for _, row in points] + list(peaks.values())
    xs, ys = [v for v in xs if v > 0], [v for v in ys if v > 0]
    return Scale(
        xmin=_decade_below(min([0.1, *xs])),
        xmax=_decade_above(max([10.0, *xs]) * 2),
        ymin=_decade_below(min([0.1, *ys])),
        ymax=_decade_above(max([1.0, *ys]) * 1.5),
    )


def spread_labels(wanted: list[float], gap: float = LABEL_GAP) -> list[float]:
    """Label y positions as close to `wanted` as they can be with at least `gap` between any two,
    in the same order: pushed down from the top, then back up if the last ran too far."""
    if not wanted:
        return []
    order = sorted(range(len(wanted)), key=lambda i: wanted[i])
    placed = [wanted[order[0]]]
    for i in order[1:]:
        placed.append(max(wanted[i], placed[-1] + gap))
    overshoot = placed[-1] - max(wanted)
    if overshoot > 0:  # centre the pushed block on the labels it displaced
        placed = [y - overshoot / 2 for y in placed]
        for k in range(1, len(placed)):
            placed[k] = max(placed[k], placed[k - 1] + gap)
    result = [0.0] * len(wanted)
    for k, i in enumerate(order):
        result[i] = placed[k]
    return result


def _axes(scale: Scale) -> list[str]:
    parts = [
        f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{HEIGHT - TOP - BOTTOM}" '
        'fill="none" stroke="#bbb"/>'
    ]
    for d in range(round(math.log10(scale.xmin)), round(math.log10(scale.xmax)) + 1):
        x = scale.x(10.0**d)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" stroke="#eee"/>')
        parts.append(f'<text x="{x:.1f}" y="{HEIGHT - BOTTOM + 15}" text-anchor="middle">{10.0**d:g}</text>')
    for d in range(round(math.log10(scale.ymin)), round(math.log10(scale.ymax)) + 1):
        y = scale.y(10.0**d)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{10.0**d:g}</text>')
    mid_x, mid_y = (WIDTH - RIGHT + LEFT) / 2, (HEIGHT - BOTTOM + TOP) / 2
    parts.append(f'<text x="{mid_x}" y="{HEIGHT - 8}" text-anchor="middle">arithmetic intensity (FLOP/byte)</text>')
    parts.append(
        f'<text x="14" y="{mid_y}" transform="rotate(-90 14 {mid_y})" text-anchor="middle">achieved GFLOP/s</text>'
    )
    return parts


def _ceilings(scale: Scale, bandwidth: float, peaks: dict[str, float]) -> list[str]:
    """A polyline per dtype (bandwidth slope to its ridge, then flat), labels right of the plot."""
    parts = []
    names = sorted(peaks, key=lambda name: -peaks[name])
    x0 = max(scale.xmin, scale.ymin / bandwidth)  # where the slope enters the plot
    y0 = bandwidth * x0
    for name in names:
        peak = peaks[name]
        ridge = peak / bandwidth
        points = f"{scale.x(x0):.1f},{scale.y(y0):.1f} {scale.x(ridge):.1f},{scale.y(peak):.1f} "
        points += f"{scale.x(scale.xmax):.1f},{scale.y(peak):.1f}"
        dash = "" if name == "fp32" else ' stroke-dasharray="5,3"'
        parts.append(
            f'<polyline class="ceiling" points="{points}" fill="none" stroke="{COLORS.get(name, "#555")}" '
            f'stroke-width="{2 if name == "fp32" else 1}"{dash}/>'
        )
    label_ys = spread_labels([scale.y(peaks[name]) + 4 for name in names])
    for name, y in zip(names, label_ys):
        parts.append(
            f'<text class="roof-label" x="{WIDTH - RIGHT + 6}" y="{y:.1f}" fill="{COLORS.get(name, "#555")}">'
            f"{escape(name)} {format_rate(peaks[name])} GFLOP/s</text>"
        )
    # The bandwidth label along the slope, a quarter of the way to the lowest ridge, lifted off it.
    ridge = min(peaks.values()) / bandwidth
    ax, ay = scale.x(x0), scale.y(y0)
    bx, by = scale.x(ridge), scale.y(bandwidth * ridge)
    angle = math.degrees(math.atan2(by - ay, bx - ax))
    lx, ly = ax + (bx - ax) * 0.25, ay + (by - ay) * 0.25
    parts.append(
        f'<text class="roof-label bandwidth-label" x="{lx:.1f}" y="{ly:.1f}" dy="-{SLOPE_LABEL_LIFT}" '
        f'transform="rotate({angle:.2f} {lx:.1f} {ly:.1f})">{format_rate(bandwidth)} GB/s</text>'
    )
    return parts


def _points(scale: Scale, points: list[tuple[str, GroupRate]]) -> list[str]:
    parts = []
    slowest = max((row.seconds for _, row in points), default=0.0) or 1e-12
    for section, row in points:
        x, y = scale.x(row.flops_per_byte), scale.y(row.achieved_gflops)
        radius = 3 + 7 * math.sqrt(row.seconds / slowest)
        noun = "layer" if section == "layers" else "op"
        tip = (
            f"{noun} {row.label}: {row.flops_per_byte:.3g} FLOP/byte, {row.achieved_gflops:.3g} GFLOP/s, "
            f"{row.share:.1%} of the call"
        )
        css = f"point {section}" + (" above-roof" if row.above_roof else "")
        stroke = ' stroke="#dc2626" stroke-width="2"' if row.above_roof else ""
        if row.above_roof:
            tip += f" ({ABOVE_ROOF_NOTE})"
        parts.append(
            f'<circle class="{css}" cx="{x:.1f}" cy="{y:.1f}" r="{radius:.1f}" fill="{POINT_FILL[section]}"{stroke}>'
            f"<title>{escape(tip)}</title></circle>"
        )
    return parts


def roofline_points(report: dict[str, Any]) -> list[tuple[str, GroupRate]]:
    """Every layer and op that can sit on the chart: it has FLOPs, bytes and time."""
    return [
        (section, row)
        for section in SECTIONS
        for row in group_rates(report, section)
        if row.flops > 0 and row.bytes_moved > 0 and row.seconds > 0
    ]


def roofline_svg(report: dict[str, Any]) -> str:
    """The chart, or "" when the report has no point to draw (a script's loop, say)."""
    points = roofline_points(report)
    if not points:
        return ""
    machine = report.get("machine") or {}
    bandwidth = machine.get("peak_bandwidth_gbs") or 0.0
    peaks = {name: peak for name, peak in (machine.get("peak_gflops_by_dtype") or {}).items() if peak and peak > 0}
    if not bandwidth:
        peaks = {}
    scale = _scale(points, bandwidth, peaks)
    parts = _axes(scale)
    if peaks:
        parts += _ceilings(scale, bandwidth, peaks)
    parts += _points(scale, points)
    return (
        f'<svg id="roofline" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="roofline chart" data-drawn="{len(points)}" data-ceilings="{len(peaks)}">'
        + "".join(parts)
        + "</svg>"
    )
