"""The third round of user code (issue 26), each pipeline of tests/real/ proven as a user runs it:
`accel profile` names the right finding, and a built-in recipe's search at its default budget, planned
on that profile, tries the recommended cure first and keeps it, outputs intact (one trial, so the
test stays short; the order and the budget are the recipe's own); where no cure applies, `accel
optimize` (the console script, as a user runs it) says why for each candidate ("not applicable:
..."), never "failed".

What is asserted holds on any CPU and under load: which cure is tried first and kept where its
effect is large (a result cache on 9 repeats in 10, a decode cache on PNGs that cost 30x the
model), never which runtime wins.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import pytest
import torch

import accel
from accel.optimizing.decision import Verdict
from accel.optimizing.optimizers import Context
from accel.optimizing.recipes import get_recipe
from accel.optimizing.search.engine import Search
from tests.paths import REAL

pytest.importorskip("transformers")

# Enough for four candidates that are each not applicable, said before any is timed.
RNN_BUDGET_SECONDS = "60"


def optimize_cli(name: str, tmp_path, *options: str) -> dict:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "accel", "optimize", str(REAL / name), "--out", str(out)]
    command += ["--json", str(tmp_path / "result.json"), *options]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads((tmp_path / "result.json").read_text())


def first_trial(name: str, recipe: str, tmp_path, machine) -> tuple[Any, Any, Any]:
    """The built-in recipe's search at its default budget, planned on the pipeline's own profile, and
    its first candidate tried: (the profile, the step, the search). Candidates planned before it that
    do not apply to the pipeline (said before any trial: a decoder-only loop's ORT export on an
    encoder-decoder) are passed over, as the search passes them."""
    pipeline = accel.load(REAL / name)
    report = accel.profile(pipeline, machine=machine, budget_seconds=5.0)
    context = Context(machine=machine, workdir=tmp_path, report=report, pipeline_path=REAL / name)
    search = Search(pipeline, get_recipe(recipe), context, report=report)
    assert search.budget == get_recipe(recipe).budget_seconds
    for rule, candidate in search.plan():
        step = search.try_candidate(rule, candidate)
        if step.verdict is not Verdict.NOT_APPLICABLE:
            return report, step, search
    raise AssertionError("no candidate of the recipe applies")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "kinds", "cure"),
    [
        ("embedding_service.py", ("repeated_inputs",), "cache.results"),
        ("png_image_classifier.py", ("input_decoding", "data_loading"), "cache.decoded"),
    ],
)
def test_the_throughput_recipe_tries_the_profiles_cure_first_and_keeps_it(name, kinds, cure, tmp_path, machine):
    report, step, search = first_trial(name, "throughput", tmp_path, machine)
    assert report.primary in kinds, [(f.kind, f.impact) for f in report.findings]
    assert step.optimizer == cure, step
    assert step.verdict is Verdict.ACCEPTED, step.reason
    # its prediction beside its measurement, as the table and the JSON show them (the measured
    # speed-up is only held above the keep threshold, which ACCEPTED says: its size is the
    # benchmarks' to show; it read 1.25x once in the slow suite on a 2-core AVX2 EPYC)
    assert step.predicted_speedup > 1.3 and step.speedup_ci[0] > get_recipe("throughput").keep.min_speedup
    assert step.to_dict()["predicted_speedup"] == pytest.approx(step.predicted_speedup)
    # outputs intact: the kept pipeline gives the original's results
    original, kept = accel.load(REAL / name), search.best[0]
    assert [c.optimizer for c in search.best[1]] == [cure]
    for want, got in zip(original.run(), kept.run()):
        want, got = (r["last_hidden_state"] if isinstance(r, Mapping) else r for r in (want, got))
        assert got.shape == want.shape and (got - want).abs().max() <= 1e-4 * max(float(want.abs().max()), 1.0)


@pytest.mark.slow
def test_a_stepwise_rnn_says_why_no_export_or_batch_applies(tmp_path, machine):
    report = accel.profile(REAL / "char_rnn_stepwise.py", machine=machine, budget_seconds=3.0)
    overhead = report.finding("overhead")
    assert overhead is not None and "batch.size" not in overhead.recommendations
    assert "positions" in overhead.evidence["cures_left_out"]["batch.size"]
    candidates = "onnx.runtime,onnx.int8_dynamic,openvino.runtime,batch.size"
    result = optimize_cli(
        "char_rnn_stepwise.py", tmp_path, "--recipe", "throughput", "--only", candidates, "--budget", RNN_BUDGET_SECONDS
    )
    steps = {s["optimizer"]: s for s in result["steps"] if s["verdict"] != "skipped"}
    assert all(s["verdict"] != "failed" for s in result["steps"]), [
        (s["optimizer"], s["reason"]) for s in steps.values()
    ]
    assert steps["onnx.runtime"]["verdict"] == "not applicable"
    assert "the export fixes a data-dependent loop at length" in steps["onnx.runtime"]["reason"]
    assert steps["batch.size"]["verdict"] == "not applicable"
    assert "default collate" in steps["batch.size"]["reason"]
    if "openvino.runtime" in steps:
        assert steps["openvino.runtime"]["verdict"] == "not applicable", steps["openvino.runtime"]["reason"]


@pytest.mark.slow
def test_whisper_generating_without_cache_is_generation_and_the_cache_is_kept(tmp_path, machine):
    report = accel.profile(REAL / "whisper_generate_no_cache.py", machine=machine, budget_seconds=3.0)
    assert report.primary == "generation", [(f.kind, f.impact) for f in report.findings]
    evidence = report.finding("generation").evidence
    # each step feeds the decoder the whole prefix again: most of its token positions were computed before
    assert evidence["recomputed_token_share"] > 0.8 and evidence["cache_gain_measured"] > 0.2
    assert evidence["cache_outputs_equal"] is True
    # one thread: the advice for this model on a busy machine (56.9 s a batch against 1.68 s)
    torch.set_num_threads(1)
    _, step, _ = first_trial("whisper_generate_no_cache.py", "latency", tmp_path, machine)
    assert step.optimizer == "generation.kv_cache" and step.verdict is Verdict.ACCEPTED, step.reason
    assert step.predicted_speedup is not None and step.speedup > 1.0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["trainer_text_classifier.py", "lightning_image_classifier.py"])
def test_training_scripts_of_frameworks_are_profiled_as_scripts(name, machine):
    if name.startswith("lightning"):
        pytest.importorskip("lightning")
    else:
        pytest.importorskip("accelerate")  # transformers' Trainer needs it
    report = accel.profile(REAL / name, machine=machine, budget_seconds=45.0)
    assert report.mode == "script"
    assert report.primary == "data_loading", [(f.kind, f.severity) for f in report.findings]
    assert "loader.tune" in report.finding("data_loading").recommendations


# A budget a user would give: the search runs its 3 rounds of every setting (each trial the whole
# script, one epoch), past it if need be. The scripts take their training set's size as an argument
# (accel passes what follows --): 6 and 5 batches of 32 keep each of the ~16 runs short.
SCRIPT_BUDGET_SECONDS = "60"
SCRIPT_SAMPLES = {"trainer_text_classifier.py": "192", "lightning_image_classifier.py": "160"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["trainer_text_classifier.py", "lightning_image_classifier.py"])
def test_training_scripts_of_frameworks_reach_the_loader_cure_through_optimize(name, tmp_path):
    """The profile's data_loading finding recommends loader.tune (test above); `accel optimize` on the
    script, as a user runs it with the default recipe, tries DataLoader workers first (the as-written
    loader has none), judges each on the script's own batches, and keeps one only where it pays.
    Whether it pays is the machine's: on a quiet 2-core machine a worker's start-up outweighs these
    scripts' 0.1 s epochs (0.44-0.86x, nothing kept), while under load the in-line preprocessing
    waits on the cores and workers were kept (Trainer 10.95x [3.03, 27.57] at load 2.7-11)."""
    if name.startswith("lightning"):
        pytest.importorskip("lightning")
    else:
        pytest.importorskip("accelerate")
    result = optimize_cli(name, tmp_path, "--budget", SCRIPT_BUDGET_SECONDS, "--", SCRIPT_SAMPLES[name])
    assert result["mode"] == "script" and result["recipe"] == "default" and result["partial"] is False
    steps = result["steps"]
    assert steps[0]["optimizer"].startswith("num_workers=1"), steps[0]
    judged = [s for s in steps if s["verdict"] in ("accepted", "reverted")]
    assert judged, steps
    for step in judged:  # outputs intact: each setting ran on the script's own batches
        assert step["fidelity"] == {"batches": "same batches"}, step
    kept = [s for s in steps if s["verdict"] == "accepted"]
    if kept:
        assert result["chosen"]["num_workers"] > 0 and result["kept"] == ["script.loader"], result["message"]
        assert kept[0]["speedup_ci"][0] > 1.03, kept
        assert "script.loader" in (tmp_path / "out" / "accel.lock.yaml").read_text()
    else:
        assert result["chosen"] is None and "nothing kept" in result["message"], result["message"]
