"""The terminal profile names the slowest layers and ops, every column kept at 80 columns."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from accel.cli.common import THEME
from accel.cli.render_profile import print_top_groups
from accel.profiling.report import Report
from tests.paths import PLANTED
from tests.profiling.test_html_layout import crowded_report

COLUMNS = ("layer", "share", "achieved (of roof)", "roof", "cure")


def table_headers(text: str) -> list[list[str]]:
    """Each table's column headers, a header wrapped over lines in its cell joined back together."""
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("┏"):
            current = None
        elif line.startswith("┃"):
            cells = [cell.strip() for cell in line.strip("┃").split("┃")]
            if current is None:
                current = [[] for _ in cells]
                tables.append(current)
            for parts, cell in zip(current, cells):
                if cell:
                    parts.append(cell)
    return [[" ".join(parts) for parts in table] for table in tables]


def test_top_tables_keep_every_column_at_80_columns():
    data = crowded_report()
    data["machine"].update(threads=2, torch_version="2", accel_version="0")
    out = StringIO()
    print_top_groups(Report.from_dict(data), Console(file=out, width=80, color_system=None, theme=THEME))
    text = out.getvalue()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "Top layers" in text and "Top ops" in text
    assert table_headers(text) == [list(COLUMNS), ["op", *COLUMNS[1:]]]
    # the long layer name folds inside its cell rather than being cut
    assert "encoder.layer.0.intermediate.dense" in "".join(
        line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")
    )
    assert "quantize.int8_dynamic" in text and "bandwidth" in text and "20.0 GB/s" in text
    assert "50.0%" in text and "!" in text and "measured above the calibrated roof: distrust" in text


@pytest.mark.slow
def test_console_script_prints_the_top_layers_at_80_columns(tmp_path):
    accel = Path(sys.executable).with_name("accel")
    env = {**os.environ, "COLUMNS": "80"}
    target = PLANTED / "hw_wide_mlp.py"
    result = subprocess.run(
        [str(accel), "profile", str(target), "--no-trace", "--budget", "2"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    text = result.stdout
    top = text[text.index("Top layers") : text.index("Top ops")]
    assert all(len(line) <= 80 for line in top.splitlines())
    assert table_headers(top) == [list(COLUMNS)]
    rows = [line for line in top.splitlines() if line.startswith("│") and "%" in line]
    assert rows, top
    assert all("GB/s" in row or "GFLOP/s" in row for row in rows)


def _stages_report(names: list[str], shares: list[float]) -> Report:
    import dataclasses

    from accel.profiling.report import Stage

    data = crowded_report()
    data["machine"].update(threads=2, torch_version="2", accel_version="0")
    stages = [
        Stage(name=name, seconds=share, share=share, per_sample_seconds=share / 100, samples_per_s=12345.6 / share)
        for name, share in zip(names, shares)
    ]
    return dataclasses.replace(Report.from_dict(data), stages=stages)


@pytest.mark.parametrize("width", [80, 120])
def test_the_stages_table_keeps_its_share_and_bar_columns(width):
    from accel.cli.render_profile import BAR_WIDTH, stage_table

    names = ["load", "decode (a long stage name from the pipeline)", "model"]
    report = _stages_report(names, [0.1, 0.3, 0.6])
    out = StringIO()
    Console(file=out, width=width, color_system=None, theme=THEME).print(stage_table(report, width))
    text = out.getvalue()
    assert all(len(line) <= width for line in text.splitlines()), text
    assert table_headers(text) == [["stage", "per sample", "samples/s", "share", ""]]  # the bar column too
    rows = [line for line in text.splitlines() if line.startswith("│") and "%" in line]
    shares = [row.split("│")[4].strip() for row in rows]
    assert shares == ["10.0%", "30.0%", "60.0%"]
    bars = [row.split("│")[5].count("█") for row in rows]
    assert bars[0] < bars[1] < bars[2] and bars[2] >= 10  # the bars show the shares apart, none cut off
    assert abs(bars[2] / bars[1] - 2.0) < 0.25
    if width == 120:
        assert bars[2] == round(0.6 * BAR_WIDTH)  # room enough: the full-width bar
