"""The HTML report: one self-contained page (no network) rendered from a report's JSON.

`render_html(report_dict)` is pure: it returns the page as a string; the caller writes it. The
report data is embedded as JSON, and a small inline script draws the stage breakdown, the roofline
chart (an SVG: each layer and op a point at its arithmetic intensity and achieved GFLOP/s, the
ceilings from calibration) and the findings. When the chart is drawn, the script sets
`data-drawn` on it to the number of points, which a headless browser test can read from the DOM.
"""

from __future__ import annotations

import html
import json
from typing import Any

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:980px;color:#222}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.muted{color:#777}.bar{background:#3b82f6;height:14px;border-radius:2px}
table{border-collapse:collapse}td,th{padding:3px 10px;text-align:left;border-bottom:1px solid #eee}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.finding{border-left:4px solid #ccc;padding:6px 12px;margin:10px 0;background:#fafafa}
.high{border-color:#dc2626}.medium{border-color:#d97706}.low{border-color:#0891b2}.info{border-color:#9ca3af}
pre{font-size:12px;overflow:auto;background:#f3f4f6;padding:8px}
svg text{font-size:11px;fill:#444}.legend span{margin-right:14px}
"""

_SCRIPT = r"""
(function () {
  const data = JSON.parse(document.getElementById("accel-data").textContent);
  const NS = "http://www.w3.org/2000/svg";
  function el(tag, attrs, parent) {
    const node = document.createElementNS(NS, tag);
    for (const k in attrs) node.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(node);
    return node;
  }
  function fmtSeconds(s) {
    if (s >= 1) return s.toFixed(2) + " s";
    if (s >= 1e-3) return (s * 1e3).toFixed(2) + " ms";
    return (s * 1e6).toFixed(1) + " us";
  }
  // Stage breakdown
  const stages = document.getElementById("stages");
  for (const st of data.stages || []) {
    const row = stages.insertRow();
    row.insertCell().textContent = st.name;
    const c1 = row.insertCell(); c1.className = "num"; c1.textContent = fmtSeconds(st.per_sample_seconds);
    const c2 = row.insertCell(); c2.className = "num"; c2.textContent = (st.share * 100).toFixed(1) + "%";
    const c3 = row.insertCell(); c3.style.width = "420px";
    const bar = document.createElement("div"); bar.className = "bar";
    bar.style.width = Math.max(1, st.share * 100) + "%"; c3.appendChild(bar);
  }
  // Roofline chart (log-log)
  const svg = document.getElementById("roofline");
  const W = 900, H = 420, L = 60, R = 20, T = 20, B = 45;
  const m = data.machine || {};
  const bw = m.peak_bandwidth_gbs, peaks = m.peak_gflops_by_dtype || {};
  const points = [];
  for (const kind of ["layers", "ops"]) {
    for (const g of data[kind] || []) {
      if (g.flops > 0 && g.bytes_moved > 0 && g.seconds > 0)
        points.push({kind: kind, name: g.name, x: g.flops / g.bytes_moved, y: g.flops / g.seconds / 1e9,
                     seconds: g.seconds});
    }
  }
  const peakValues = Object.values(peaks).filter(v => v > 0);
  const xs = points.map(p => p.x).concat(bw && peakValues.length ? peakValues.map(v => v / bw) : []);
  const ys = points.map(p => p.y).concat(peakValues);
  const xmin = Math.pow(10, Math.floor(Math.log10(Math.min(0.1, ...xs.filter(v => v > 0))))),
        xmax = Math.pow(10, Math.ceil(Math.log10(Math.max(10, ...xs) * 2)));
  const ymin = Math.pow(10, Math.floor(Math.log10(Math.min(0.1, ...ys.filter(v => v > 0))))),
        ymax = Math.pow(10, Math.ceil(Math.log10(Math.max(1, ...ys) * 1.5)));
  const sx = v => L + (Math.log10(v) - Math.log10(xmin)) / (Math.log10(xmax) - Math.log10(xmin)) * (W - L - R);
  const sy = v => H - B - (Math.log10(v) - Math.log10(ymin)) / (Math.log10(ymax) - Math.log10(ymin)) * (H - T - B);
  el("rect", {x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: "#bbb"}, svg);
  for (let d = Math.log10(xmin); d <= Math.log10(xmax); d++) {
    el("line", {x1: sx(10 ** d), x2: sx(10 ** d), y1: T, y2: H - B, stroke: "#eee"}, svg);
    el("text", {x: sx(10 ** d), y: H - B + 15, "text-anchor": "middle"}, svg).textContent = String(10 ** d);
  }
  for (let d = Math.log10(ymin); d <= Math.log10(ymax); d++) {
    el("line", {x1: L, x2: W - R, y1: sy(10 ** d), y2: sy(10 ** d), stroke: "#eee"}, svg);
    el("text", {x: L - 6, y: sy(10 ** d) + 4, "text-anchor": "end"}, svg).textContent = String(10 ** d);
  }
  el("text", {x: (W + L) / 2, y: H - 8, "text-anchor": "middle"}, svg).textContent = "arithmetic intensity (FLOP/byte)";
  el("text", {x: 14, y: (H - B + T) / 2, transform: `rotate(-90 14 ${(H - B + T) / 2})`,
              "text-anchor": "middle"}, svg).textContent = "achieved GFLOP/s";
  const colors = {fp32: "#111", bf16: "#16a34a", fp16: "#9333ea", int8: "#ea580c"};
  let ceilings = 0;
  if (bw) {
    for (const name in peaks) {
      const peak = peaks[name];
      if (!(peak > 0)) continue;
      const ridge = peak / bw;
      const x0 = xmin, y0 = Math.max(bw * xmin, ymin);
      el("polyline", {points: `${sx(x0)},${sy(y0)} ${sx(ridge)},${sy(peak)} ${sx(xmax)},${sy(peak)}`,
                      fill: "none", stroke: colors[name] || "#555", "stroke-width": name === "fp32" ? 2 : 1,
                      "stroke-dasharray": name === "fp32" ? "" : "5,3", class: "ceiling"}, svg);
      el("text", {x: W - R - 4, y: sy(peak) - 4, "text-anchor": "end"}, svg).textContent =
        `${name} ${peak.toFixed(0)} GFLOP/s`;
      ceilings++;
    }
    el("text", {x: sx(xmin) + 6, y: sy(Math.max(bw * xmin, ymin)) - 6}, svg).textContent = `${bw.toFixed(1)} GB/s`;
  }
  const maxSeconds = Math.max(...points.map(p => p.seconds), 1e-12);
  for (const p of points) {
    const c = el("circle", {cx: sx(p.x), cy: sy(p.y), r: 3 + 7 * Math.sqrt(p.seconds / maxSeconds),
                            fill: p.kind === "layers" ? "rgba(59,130,246,.6)" : "rgba(234,88,12,.5)",
                            class: "point " + p.kind}, svg);
    el("title", {}, c).textContent = `${p.kind === "layers" ? "layer" : "op"} ${p.name}: ` +
      `${p.x.toFixed(2)} FLOP/byte, ${p.y.toFixed(2)} GFLOP/s, ${fmtSeconds(p.seconds)}`;
  }
  svg.setAttribute("data-ceilings", String(ceilings));
  svg.setAttribute("data-drawn", String(points.length));
  // Findings
  const box = document.getElementById("findings");
  for (const f of data.findings || []) {
    const div = document.createElement("div"); div.className = "finding " + f.severity;
    const head = document.createElement("b");
    head.textContent = `${f.severity} · ${f.kind} · impact ${(f.impact * 100).toFixed(1)}%`;
    const p = document.createElement("p"); p.textContent = f.summary;
    div.append(head, p);
    if ((f.recommendations || []).length) {
      const r = document.createElement("p"); r.textContent = "try: " + f.recommendations.join(", "); div.append(r);
    }
    const details = document.createElement("details");
    const summary = document.createElement("summary"); summary.textContent = "evidence";
    const pre = document.createElement("pre"); pre.textContent = JSON.stringify(f.evidence, null, 2);
    details.append(summary, pre); div.append(details); box.append(div);
  }
  if (!(data.findings || []).length) box.textContent = "No findings.";
  document.body.setAttribute("data-rendered", "1");
})();
"""


def _embed_json(data: Any) -> str:
    """JSON safe inside a <script> element: no "</" can close it early."""
    return json.dumps(data, default=str).replace("</", "<\\/").replace("<!--", "<\\!--")


def render_html(report: dict[str, Any]) -> str:
    """The self-contained HTML page for a report (its `to_dict()` form)."""
    machine = report.get("machine", {})
    title = html.escape(f"accel profile: {report.get('target', '')}")
    facts = html.escape(
        f"{machine.get('device_name', '?')} ({machine.get('device', '?')}, {machine.get('cores', '?')} cores) · "
        f"primary: {report.get('primary', 'none')} · "
        f"{report.get('throughput', {}).get('samples_per_s', 0.0):,.1f} samples/s"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_STYLE}</style></head>
<body>
<h1>{title}</h1>
<div class="muted">{facts}</div>
<h2>Stages</h2>
<table id="stages"><tr><th>stage</th><th>per sample</th><th>share</th><th></th></tr></table>
<h2>Roofline</h2>
<div class="muted legend"><span style="color:#3b82f6">● layer</span><span style="color:#ea580c">● op</span>
ceilings from calibration (bandwidth slope, then peak GFLOP/s per dtype); point size: time</div>
<svg id="roofline" width="900" height="420" viewBox="0 0 900 420" role="img" aria-label="roofline chart"></svg>
<h2>Findings</h2>
<div id="findings"></div>
<script type="application/json" id="accel-data">{_embed_json(report)}</script>
<script>{_SCRIPT}</script>
</body></html>
"""
