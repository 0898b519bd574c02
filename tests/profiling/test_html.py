"""The HTML report: self-contained, and drawn by a real headless browser."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from accel.profiling.html import render_html
from tests.paths import PLANTED

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def sample_report():
    return {
        "schema": "accel.profile/1",
        "target": "wide_mlp</script><b>",
        "mode": "pipeline",
        "primary": "memory_bandwidth",
        "machine": {
            "device": "cpu",
            "device_name": "test cpu",
            "cores": 2,
            "peak_bandwidth_gbs": 20.0,
            "peak_gflops": 200.0,
            "peak_gflops_by_dtype": {"fp32": 200.0, "bf16": 600.0},
        },
        "stages": [{"name": "model", "seconds": 1.0, "share": 1.0, "per_sample_seconds": 0.01, "samples_per_s": 100.0}],
        "throughput": {"samples_per_s": 100.0},
        "findings": [
            {
                "kind": "memory_bandwidth",
                "severity": "high",
                "share": 0.9,
                "impact": 0.6,
                "summary": "memory-bound </script> summary",
                "evidence": {"achieved_gbs": 15.0},
                "recommendations": ["quantize.int8_dynamic"],
            }
        ],
        "layers": [
            {"name": "0", "flops": 2 * 10**7, "bytes_moved": 4 * 10**7, "seconds": 0.003},
            {"name": "2", "flops": 10**9, "bytes_moved": 10**6, "seconds": 0.01},
        ],
        "ops": [
            {"name": "aten::addmm", "flops": 10**9, "bytes_moved": 4 * 10**7, "seconds": 0.013},
            {"name": "aten::t", "flops": 0, "bytes_moved": 0, "seconds": 0.0},
        ],
    }


def test_page_is_self_contained_and_escapes_report_text():
    page = render_html(sample_report())
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched from a network
    assert page.count("</script>") == 1  # the report's "</script>" cannot close the data element
    assert "&lt;/script&gt;&lt;b&gt;" in page  # the title is escaped


def browser_dom(tmp_path, page: str) -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required in CI")
        pytest.skip("chromium not installed")
    path = tmp_path / "report.html"
    path.write_text(page)
    result = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
def test_headless_chromium_renders_the_roofline_chart(tmp_path):
    dom = browser_dom(tmp_path, render_html(sample_report()))
    # 2 layers and 1 op have FLOPs (aten::t has none): 3 points, and a ceiling per calibrated dtype
    assert re.search(r'id="roofline"[^>]*data-drawn="3"', dom) or re.search(r'data-drawn="3"[^>]*id="roofline"', dom)
    assert dom.count("<circle") == 3
    assert 'data-ceilings="2"' in dom
    assert dom.count('class="ceiling"') == 2
    assert "memory-bound &lt;/script&gt; summary" in dom  # the finding, as text
    assert "quantize.int8_dynamic" in dom


@pytest.mark.slow
def test_profile_html_flag_writes_a_page_the_browser_draws(tmp_path, monkeypatch):
    import dataclasses

    from typer.testing import CliRunner

    from accel.cli import app
    from accel.core.machine import describe_machine

    machine = dataclasses.replace(
        describe_machine("cpu"),
        peak_bandwidth_gbs=20.0,
        peak_gflops=200.0,
        peak_gflops_by_dtype={"fp32": 200.0},
        calibrated=True,
    )
    monkeypatch.setattr("accel.profiling.run.describe_machine", lambda device=None: machine)
    out = tmp_path / "report.html"
    planted = PLANTED / "hw_tiny_ops.py"
    result = CliRunner().invoke(app, ["profile", str(planted), "--html", str(out), "--no-trace", "--budget", "1"])
    assert result.exit_code == 0, result.output
    dom = browser_dom(tmp_path, out.read_text())
    assert dom.count("<circle") >= 2 and 'id="top-layers"' in dom
    assert "overhead" in dom
