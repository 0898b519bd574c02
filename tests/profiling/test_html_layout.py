"""The HTML report reads without JavaScript, names the slowest layers, and its chart labels never overlap
(measured from the DOM of a real headless browser, with a screenshot taken)."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from accel.profiling.html import render_html
from accel.profiling.html_roofline import LABEL_GAP, spread_labels
from tests.profiling.test_html import CHROMIUM, browser_dom, sample_report


def crowded_report():
    """Four dtype roofs within a few percent of each other: drawn at their own height, their labels
    would sit on top of each other. One layer is measured faster than its roof."""
    data = sample_report()
    data["target"] = "crowded"
    data["machine"]["peak_gflops_by_dtype"] = {"fp32": 200.0, "bf16": 210.0, "fp16": 205.0, "int8": 215.0}
    data["layers"][0]["roofline_seconds"] = 0.002
    data["layers"][0]["memory_bound_seconds"] = 0.003  # 0.5 FLOP/byte: under the bandwidth slope
    data["layers"][1]["roofline_seconds"] = 0.02  # took 0.01 s: above its roof
    data["layers"][1]["name"] = "encoder.layer.0.intermediate.dense"
    data["ops"][0]["roofline_seconds"] = 0.005
    data["cost"] = {"call_seconds": 0.02}
    data["findings"][0]["evidence"] = {
        "achieved_gbs": 15.123456789012345,
        "bandwidth_fraction": 0.7561728394506172,
        "bytes_per_call": 41943040,
        "per_sample_seconds": 0.0012345678901234,
        "predicted_saving": {"quantize.int8_dynamic": 0.4567891234567},
        "layers": [{"name": "0", "seconds": 0.0029876543210987, "achieved_gbs": 13.333333333333334}],
    }
    return data


def visible(page: str) -> str:
    """The page without its embedded JSON (which keeps full precision for tools)."""
    return re.sub(r'<script type="application/json".*?</script>', "", page, flags=re.S)


def test_the_page_needs_no_script_to_say_what_is_slow():
    page = render_html(crowded_report())
    assert "<script>" not in page and 'type="application/json"' in page  # only data, nothing executed
    text = visible(page)
    assert re.search(r"Bottleneck: <b>memory_bandwidth</b>.*Best cure to try: <b>quantize.int8_dynamic</b>", text)
    assert "Slowest layer: <b>encoder.layer.0.intermediate.dense</b>, 50.0% of a model call" in text
    for section in ("layers", "ops"):
        table = re.search(rf'<table class="top" id="top-{section}">(.*?)</table>', text).group(1)
        assert table.count("<tr>") >= 2
        for column in ("share", "achieved (of roof)", "roof", "cure"):
            assert f"<th>{column}</th>" in table
    assert "quantize.int8_dynamic" in re.search(r'id="top-layers">(.*?)</table>', text).group(1)
    assert '<svg id="roofline"' in text and 'data-drawn="3"' in text and 'data-ceilings="4"' in text


def test_a_point_above_its_roof_is_marked_and_explained():
    text = visible(render_html(crowded_report()))
    assert text.count('class="point layers above-roof"') == 1
    assert "measured above the calibrated roof: distrust" in re.search(r'id="top-layers">(.*?)</table>', text).group(1)
    clean = sample_report()
    clean["layers"][1]["roofline_seconds"] = 0.001
    assert "above-roof" not in visible(render_html(clean))


def test_evidence_is_text_with_sensible_precision():
    text = visible(render_html(crowded_report()))
    evidence = re.search(r"<details>(.*?)</details>", text, flags=re.S).group(1)
    assert not re.search(r"\d\.\d{5,}", evidence)  # no 16-digit floats
    assert "{" not in evidence  # not JSON
    for shown in ("15.1", "75.6%", "41.9 MB", "1.23 ms", "45.7%", "2.99 ms", "13.3"):
        assert f"<td>{shown}</td>" in evidence, shown


def test_a_script_report_says_why_it_has_no_roofline():
    data = sample_report()
    data["mode"] = "script"
    del data["layers"], data["ops"]
    text = visible(render_html(data))
    assert "<svg" not in text
    assert re.search(r'id="no-roofline">No roofline for this report: a training script is measured as a loop', text)


@pytest.mark.parametrize("wanted", [[100, 100, 100, 100], [50, 55, 52, 200], [10, 30, 31, 32, 33], [5.0]])
def test_spread_labels_keeps_every_pair_a_line_apart(wanted):
    placed = spread_labels(wanted)
    assert len(placed) == len(wanted)
    ordered = sorted(placed)
    assert all(b - a >= LABEL_GAP - 1e-9 for a, b in zip(ordered, ordered[1:]))
    # the order is kept, and a label that needed no room stays where it was
    assert [i for i, _ in sorted(enumerate(placed), key=lambda p: p[1])] == sorted(
        range(len(wanted)), key=lambda i: (wanted[i], i)
    )
    if len(wanted) == 1:
        assert placed == wanted


# Run in the page by the browser: every roof label's box on screen, and for the bandwidth label, whether
# its own slope line passes through the text's box (tested in the text's rotated frame).
MEASURE = """
<script>
(function () {
  const svg = document.getElementById("roofline");
  const boxes = [...svg.querySelectorAll(".roof-label")].map(t => {
    const r = t.getBoundingClientRect();
    return {text: t.textContent, left: r.left, right: r.right, top: r.top, bottom: r.bottom};
  });
  const label = svg.querySelector(".bandwidth-label");
  const box = label.getBBox(), toLabel = label.getScreenCTM().inverse();
  const line = svg.querySelector("polyline.ceiling").points;
  const a = line.getItem(0), b = line.getItem(1);
  let crossings = 0;
  for (let i = 0; i <= 400; i++) {
    const p = svg.createSVGPoint();
    p.x = a.x + (b.x - a.x) * i / 400; p.y = a.y + (b.y - a.y) * i / 400;
    const q = p.matrixTransform(svg.getScreenCTM()).matrixTransform(toLabel);
    if (q.x >= box.x && q.x <= box.x + box.width && q.y >= box.y && q.y <= box.y + box.height) crossings++;
  }
  document.body.setAttribute("data-measure", JSON.stringify({boxes: boxes, crossings: crossings}));
})();
</script>
"""


def overlaps(a, b) -> bool:
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] and b["top"] < a["bottom"]


@pytest.mark.slow
@pytest.mark.browser
def test_headless_chromium_shows_no_overlapping_roofline_labels(tmp_path):
    page = render_html(crowded_report()).replace("</body>", MEASURE + "</body>")
    dom = browser_dom(tmp_path, page)
    measured = json.loads(re.search(r'data-measure="([^"]*)"', dom).group(1).replace("&quot;", '"'))
    boxes = measured["boxes"]
    assert sorted(b["text"].split()[0] for b in boxes) == ["20.0", "bf16", "fp16", "fp32", "int8"]
    assert all(b["right"] > b["left"] and b["bottom"] > b["top"] for b in boxes)  # laid out, not empty
    clashes = [(a["text"], b["text"]) for i, a in enumerate(boxes) for b in boxes[i + 1 :] if overlaps(a, b)]
    assert clashes == []
    assert measured["crossings"] == 0  # the bandwidth label is not crossed by its own line
    shot = tmp_path / "report.png"
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile-shot'}",
            "--window-size=1400,1400",
            f"--screenshot={shot}",
            (tmp_path / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
