"""Live progress and output that reads in a CI log: `accel optimize` piped at COLUMNS=80 through the
console script says what it does line by line (candidate k of n, elapsed, budget left, each row as
it is decided) without control codes, and its result keeps every reason, verdict and interval;
the typed progress event reaches a plain `Progress` as text; NO_COLOR is honoured."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from accel.cli.common import THEME
from accel.cli.gate import fit_title
from accel.cli.live import LiveProgress
from accel.cli.render_optimize import decided_row, render_optimize
from accel.core.progress import ProgressEvent, emit, stamped
from tests.paths import PLANTED

CONSOLE_SCRIPT = Path(sys.executable).with_name("accel")
RECIPE = (
    "name: small\ntarget: latency\norder: as_written\nguard: {min_cosine: 0.995}\n"
    "rules: [{name: r, try: [precision.fp16, onnx.int8_dynamic, precision.bf16]}]\n"
)
LONG_REASON = (
    "reverted: the interval [0.71, 1.02] reaches below 1.03x, so the gain is not beyond noise at load 6.5 "
    "on 2 cores; rerun on a quieter machine"
)


def _data(**step) -> dict:
    return {
        "target": "p",
        "recipe": "r",
        "objective": "latency",
        "threads": 2,
        "speedup": 1.0,
        "speedup_ci": [1.0, 1.0],
        "message": "no candidate helped: the lock is empty",
        "kept": [],
        "lock_path": "out/accel.lock.yaml",
        "baseline": {"median_seconds": 0.002, "samples_per_call": 1, "samples_per_s": 500.0},
        "final": {"median_seconds": 0.002, "samples_per_call": 1, "samples_per_s": 500.0},
        "predicted_speedup": {"onnx.int8_dynamic": 2.5},
        "steps": [
            {
                "optimizer": "onnx.int8_dynamic",
                "rule": "r",
                "speedup": 6.01,
                "speedup_ci": [5.71, 6.32],
                "memory_ratio": None,
                "fidelity": {"cosine": 0.98123},
                "setup_seconds": 0.5,
                "first_call_seconds": 0.01,
                "verdict": "reverted",
                "reason": LONG_REASON,
                **step,
            }
        ],
    }


@pytest.mark.parametrize("terminal", [False, True])
def test_the_candidates_at_80_columns_keep_the_reason_verdict_and_interval(terminal):
    buffer = StringIO()
    out = Console(file=buffer, width=80, color_system=None, force_terminal=terminal, theme=THEME)
    render_optimize(_data(), out)
    text = buffer.getvalue()
    assert "6.01x [5.71,6.32]" in text and "reverted" in text and "(predicted 2.50x)" in text
    assert "…" not in text and all(len(line) <= 80 for line in text.splitlines())
    flat = " ".join(text.split())
    assert " ".join(LONG_REASON.split()) in flat  # wrapped at word boundaries, every word kept


def test_a_wide_terminal_gets_the_table_and_still_the_reason():
    buffer = StringIO()
    render_optimize(_data(), Console(file=buffer, width=160, color_system=None, force_terminal=True, theme=THEME))
    text = buffer.getvalue()
    assert "┃" in text or "│" in text  # the table
    assert "6.01x [5.71,6.32]" in text and "reason" in text and "rerun on a quieter" in " ".join(text.split())


def test_an_interrupted_result_says_what_was_kept_and_has_no_final_line():
    data = _data(verdict="accepted", reason="kept")
    data.update(partial=True, kept=["onnx.int8_dynamic"], message="interrupted after 1 of 3 candidates: kept ...")
    buffer = StringIO()
    render_optimize(data, Console(file=buffer, width=80, color_system=None))
    text = buffer.getvalue()
    assert "interrupted after 1 of 3" in text and "kept and verified, onnx.int8_dynamic" in text
    assert "baseline 2.00 ms" not in text


def test_no_color_is_honoured(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    buffer = StringIO()
    render_optimize(_data(), Console(file=buffer, width=80, force_terminal=True, theme=THEME))
    assert not re.search(r"\x1b\[[0-9;]*3[0-7]m", buffer.getvalue())  # no foreground colour at all
    monkeypatch.delenv("NO_COLOR")
    buffer = StringIO()
    render_optimize(_data(), Console(file=buffer, width=80, force_terminal=True, theme=THEME))
    assert re.search(r"\x1b\[[0-9;]*3[0-7]m", buffer.getvalue())  # the check above can fail


def test_plain_progress_gets_text_and_a_sink_gets_the_event_stamped():
    said: list[str] = []
    emit(said.append, ProgressEvent("trying compile", 2, 5))
    assert said == ["2/5 trying compile"]
    buffer = StringIO()
    out = Console(file=buffer, width=80, color_system=None)
    with LiveProgress(out, "optimize", render_row=decided_row, unit="candidate") as live:
        sink = stamped(live, started=0.0, budget_seconds=1e12)  # started long ago: a large elapsed
        sink("calibrating")
        emit(sink, ProgressEvent("trying compile", 2, 5))
        emit(sink, ProgressEvent("compile: reverted", 2, 5, row=_data()["steps"][0]))
    lines = buffer.getvalue().splitlines()
    assert re.match(r"\[\d+m\d\ds, \d+m\d\ds left\] optimize: calibrating$", lines[0])
    assert lines[1].endswith("optimize: candidate 2/5: trying compile")
    assert lines[2] == "[2/5] onnx.int8_dynamic  reverted" and len(live.rows) == 1
    with pytest.raises(ValueError, match="index must be within"):
        ProgressEvent("x", 6, 5)


def test_bench_and_gate_titles_do_not_wrap_in_a_narrow_table():
    from rich.table import Table

    table = Table(title="accel bench gate_mlp  (6 fresh processes)", title_justify="left")
    table.add_column("metric")
    table.add_row("p90")
    table.caption = "AMD EPYC 9B14, 2 cores, 2 threads, torch 2.5.1"
    buffer = StringIO()
    Console(file=buffer, width=140, color_system=None).print(fit_title(table))
    text = buffer.getvalue()
    assert "accel bench gate_mlp  (6 fresh processes)" in text and "torch 2.5.1" in text


@pytest.mark.slow
def test_piped_optimize_at_80_columns_talks_line_by_line(tmp_path, machine):
    file = tmp_path / "wide.py"
    shutil.copy(PLANTED / "opt_wide_mlp.py", file)
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    env = {**os.environ, "COLUMNS": "80", "TERM": "xterm-256color"}
    command = [str(CONSOLE_SCRIPT), "optimize", str(file), "--recipe", "recipe.yaml", "--threads", "1"]
    command += ["--budget", "25", "--json", "result.json", "--out", "out"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\x1b" not in result.stderr + result.stdout and "\r" not in result.stderr
    progress = result.stderr.splitlines()
    assert any(re.match(r"\[\d+m?\d*s, \d+m?\d*s left\] optimize: candidate 1/3: ", line) for line in progress)
    assert any(line.startswith("[1/3] precision.fp16") for line in progress)  # its row, as decided
    assert progress.index(next(x for x in progress if x.startswith("[1/3] precision.fp16"))) < progress.index(
        next(x for x in progress if "candidate 2/3" in x)
    )
    data = json.loads((tmp_path / "result.json").read_text())
    assert data["partial"] is False
    text = result.stdout
    assert all(len(line) <= 80 for line in text.splitlines()) and "…" not in text
    flat = " ".join(text.split())
    for step in data["steps"]:
        assert " ".join(step["reason"].split()) in flat
        if step["speedup"] is not None:
            low, high = step["speedup_ci"]
            assert f"{step['speedup']:.2f}x [{low:.2f},{high:.2f}]" in text


def test_the_engine_says_k_of_n_and_each_row_and_an_interrupt_keeps_what_was_decided(tmp_path, monkeypatch):
    # The planted optimizers of tests/optimizing/test_engine.py (dead work removed), registered here.
    import accel
    from accel.core.machine import describe_machine
    from accel.optimizing.optimizers import OPTIMIZERS, Context
    from accel.optimizing.recipes.schema import parse_recipe
    from accel.optimizing.search.engine import run_engine
    from tests.optimizing import test_engine as planted

    for cls in (planted.SkipA, planted.SkipB, planted.NeverApplies):
        monkeypatch.setitem(OPTIMIZERS._items, cls.name, cls())
    recipe = parse_recipe(
        {
            "name": "t",
            "target": "latency",
            "order": "as_written",
            "rules": [{"name": "p", "try": ["test.never", "test.skip_a", "test.skip_b"]}],
        }
    )
    events: list[ProgressEvent] = []

    class StopAtTheSecondRow:
        def __call__(self, message: str) -> None:
            events.append(ProgressEvent(message))

        def event(self, event: ProgressEvent) -> None:
            events.append(event)
            if event.row is not None and event.index == 2:
                raise KeyboardInterrupt  # as accel.cli's signal handler raises it

    context = Context(machine=describe_machine(), workdir=tmp_path)
    baseline = accel.load(PLANTED / "opt_dead_work.py")
    result = run_engine(baseline, recipe, context, budget_seconds=20, progress=StopAtTheSecondRow())
    assert [e.phase for e in events if e.index == 1][0] == "test.never: checking that it applies"
    assert [(e.index, e.total, e.row["verdict"]) for e in events if e.row] == [
        (1, 3, "not applicable"),
        (2, 3, result.steps[1].verdict.value),
    ]
    assert result.partial and len(result.steps) == 2  # test.skip_b never started
    assert result.message.startswith("interrupted after 2 of 3 candidates: ")
    kept = [c.optimizer for c in result.choices]
    assert kept == (["test.skip_a"] if result.steps[1].verdict.value == "accepted" else [])
