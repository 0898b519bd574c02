"""`accel profile` on the real-model corpus (tests/real/): transformers model classes at random init
from small configs (no download), a plain fine-tuning script and a high-resolution CNN, each
named by the finding its shape calls for. The optimize and bench half of the corpus lives apart.

What is asserted holds on any CPU: which finding is primary where its cure's effect is large
(a KV cache on a loop that recomputes 95% of its tokens, a loader that is most of the step),
and the measured evidence behind it; never which dtype or runtime wins.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import accel
from accel.optimizing.run import predicted_speedups

pytest.importorskip("transformers")

REAL = Path(__file__).parent / "real"
BUDGET_SECONDS = 3.0


def profile(name: str, machine, **options):
    return accel.profile(REAL / name, machine=machine, budget_seconds=options.pop("budget", BUDGET_SECONDS), **options)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt2_generate_no_cache.py", "llama_generate_no_cache.py"])
def test_decoder_generating_without_cache_is_generation(name, machine):
    report = profile(name, machine)
    assert report.primary == "generation", [(f.kind, f.impact) for f in report.findings]
    evidence = report.finding("generation").evidence
    # 48 calls fed 32, 33, ... 79 tokens; all but the newest token of each had been computed before
    assert evidence["steps"] == 48
    assert evidence["computed_tokens"] == sum(range(32, 80))
    assert evidence["recomputed_tokens"] == sum(range(32, 79))
    assert evidence["recomputed_token_share"] > 0.9
    assert evidence["tokens_per_s"] > 0
    # the cache turned on, measured: faster, and greedy decoding gives the same tokens
    assert evidence["cached_total_seconds"] < evidence["total_seconds"]
    assert evidence["cache_gain_measured"] > 0.2
    assert evidence["cache_outputs_equal"] is True
    assert report.finding("generation").impact == pytest.approx(evidence["cache_gain_measured"], rel=1e-6)
    assert report.finding("generation").recommendations[0] == "generation.kv_cache"  # the cure, first
    # accel optimize prints this prediction beside the cache's measured speed-up
    assert predicted_speedups(report)["generation.kv_cache"] == pytest.approx(1 / (1 - evidence["cache_gain_measured"]))


@pytest.mark.slow
def test_decoder_generating_with_cache_reports_no_recomputation(machine):
    report = profile("gpt2_generate_cached.py", machine)
    finding = report.finding("generation")
    assert finding.evidence["recomputed_tokens"] == 0
    assert finding.evidence["computed_tokens"] == 32 + 47  # the prompt, then one token per call
    assert finding.impact == 0.0 and report.primary != "generation"
    assert "no call recomputes" in finding.summary
    assert finding.evidence["cache_gain_measured"] is None  # nothing to turn on
    assert "generation.kv_cache" not in finding.recommendations


@pytest.mark.slow
def test_encoder_decoder_generating_without_cache_counts_decoder_tokens(machine):
    report = profile("t5_generate_no_cache.py", machine)
    finding = report.finding("generation")
    assert finding.severity in ("high", "medium")
    evidence = finding.evidence
    # T5's decoder starts from one start token: calls are fed 1..24 decoder tokens, 4 sequences each
    assert evidence["computed_tokens"] == 4 * sum(range(1, 25))
    assert evidence["recomputed_tokens"] == 4 * sum(range(1, 24))
    assert evidence["cache_gain_measured"] > 0.2 and evidence["cache_outputs_equal"] is True
    # the cost pass measured the decoder call the loop makes (keyword arguments and all)
    assert "cost" not in report.extra.get("hardware_passes_skipped", {})


@pytest.mark.slow
def test_fine_tuning_script_with_a_global_model_runs_once_as_a_script(machine, monkeypatch):
    import accel.core.loading as loading

    def no_import(file, args=()):
        raise AssertionError(f"{file} was imported: its training loop would have run")

    monkeypatch.setattr(loading, "import_file", no_import)
    report = profile("finetune_text_classifier.py", machine, budget=15.0)
    assert report.mode == "script"
    assert report.primary == "data_loading"
    assert report.extra["end_to_end"]["batches"] >= 2
    (note,) = report.extra["notes"]
    assert "defines model but not example_inputs: run once as a script" in note


@pytest.mark.slow
def test_highres_cnn_stage_of_5_of_13_layers_and_patch_inference_agree(machine, tmp_path):
    from accel.optimizing.optimizers import OPTIMIZERS, Context

    report = profile("highres_groupnorm_cnn.py", machine)
    finding = report.finding("memory_peak")
    assert finding is not None and finding.recommendations == ["patch.inference"]
    plan = finding.evidence["patch_plan"]
    assert (plan["local_layers"], plan["stage_layers"]) == (5, 13)
    assert "GroupNorm" in plan["stop_reason"]
    assert finding.evidence["leading_layers"] == 5
    assert finding.evidence["predicted_reduction"] >= 2.0
    # the cure, measured on the same model: its candidates are the plan's, and each one's measured
    # peak is what the plan predicted for it (within 1.5x either way)
    pipeline = accel.load(REAL / "highres_groupnorm_cnn.py")
    optimizer = OPTIMIZERS.get("patch.inference")
    applied = optimizer.apply(pipeline, optimizer.Config(), Context(machine=machine, workdir=tmp_path))
    notes = applied.notes
    predicted = {(c["prefix_layers"], c["grid"]): c["predicted_peak_bytes"] for c in plan["candidates"]}
    measured = {(c["prefix_layers"], c["grid"]): c["peak_bytes"] for c in notes["candidates"]}
    assert set(predicted) == set(measured)
    scale = notes["peak_bytes_before"] / plan["unpatched_peak_bytes"]
    for key, peak in measured.items():
        assert 1 / 1.5 <= predicted[key] * scale / peak <= 1.5, (key, predicted[key], peak)
    assert notes["peak_ratio"] <= 1 / 2.0
