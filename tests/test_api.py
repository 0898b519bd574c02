"""The Python API (issue 25 point 8): typed overloads that mypy --strict accepts, short reprs, no
side effect on torch's global RNG, and the CLI's budget check."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import accel
from accel.optimizing.optimizers.loader_tune import Setting
from accel.optimizing.recipes import parse_recipe
from accel.optimizing.script import ScriptOptimizeResult
from tests.paths import PLANTED

# One candidate that does not apply to an MLP: the search is the baseline and one skipped row.
NOT_APPLICABLE = {"name": "one", "target": "latency", "rules": [{"name": "r", "try": ["layout.channels_last"]}]}

SNIPPET = """
import accel

result = accel.optimize("pipeline.py")
pipeline: accel.Pipeline = result.pipeline
again: accel.Pipeline = accel.optimize(accel.load("pipeline.py")).result.pipeline
script = accel.optimize("train.py", as_script=True)
workers = script.chosen
script.result  # type: ignore[attr-defined]
report: accel.Report = accel.profile(pipeline, budget_seconds=5.0)
primary: str = report.primary
"""


@pytest.mark.slow
def test_the_api_type_checks_under_mypy_strict(tmp_path):
    (tmp_path / "snippet.py").write_text(textwrap.dedent(SNIPPET))
    # The editable install is an import hook mypy cannot follow: the package's folder is named instead.
    env = {**os.environ, "MYPYPATH": str(Path(accel.__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent"]
        + ["--cache-dir", str(tmp_path / "cache"), "snippet.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    # The `type: ignore` on the script result's missing `.result` is used only while as_script=True
    # selects the ScriptOptimizeResult overload (--strict warns about an unused ignore).
    assert done.returncode == 0, done.stdout + done.stderr


def test_profile_restores_the_rng_state_and_its_report_repr_is_short():
    torch.manual_seed(1234)
    torch.rand(3)
    before = torch.get_rng_state()
    report = accel.profile(PLANTED / "opt_wide_mlp.py", budget_seconds=1.0, trace_dir=None)
    assert torch.equal(torch.get_rng_state(), before)
    text = repr(report)
    assert len(text) < 300 and text.startswith("Report(target='opt_wide_mlp'"), text


def test_a_budget_the_cli_refuses_is_refused_by_the_api_with_its_message():
    for call in (
        lambda: accel.profile(PLANTED / "opt_wide_mlp.py", budget_seconds=0),
        lambda: accel.optimize(PLANTED / "opt_wide_mlp.py", budget_seconds=0),
        lambda: accel.optimize(PLANTED / "opt_wide_mlp.py", budget_seconds=-5.0),
    ):
        with pytest.raises(accel.AccelError) as info:
            call()
        assert "budget" in info.value.message and "greater than or equal to 1" in info.value.message


def test_optimize_result_repr_is_short_and_names_no_model(tmp_path):
    result = accel.optimize(PLANTED / "opt_wide_mlp.py", parse_recipe(NOT_APPLICABLE), budget_seconds=5.0)
    assert isinstance(result.pipeline, accel.Pipeline)
    text = repr(result)
    assert len(text) < 300 and "Linear" not in text and "Sequential" not in text, text
    assert text.startswith("OptimizeResult(name='opt_wide_mlp', recipe='one', speedup="), text


def test_a_script_result_has_a_short_repr_and_says_it_has_no_pipeline():
    result = ScriptOptimizeResult(
        name="train",
        recipe="throughput",
        threads=2,
        cores=2,
        steps=(),
        chosen=None,
        chosen_threads=None,
        baseline_samples_per_s=100.0,
        final_samples_per_s=100.0,
        speedup=1.0,
        speedup_ci=(0.9, 1.1),
        message="no candidate helped",
        rounds=3,
        elapsed_seconds=10.0,
    )
    assert repr(result) == (
        "ScriptOptimizeResult(name='train', recipe='throughput', speedup=1.00x, chosen=None, steps=0, lock_path=None)"
    )
    with pytest.raises(accel.AccelError, match="train is a training script"):
        result.pipeline
    chose = dataclasses.replace(result, chosen=Setting(num_workers=2))
    assert "chosen='num_workers=2" in repr(chose) and len(repr(chose)) < 300, repr(chose)
