"""Padding made before batching (a tokenizer's padding="max_length"): measured from the attention
mask or from pad-token runs, named by the padding analyzer, cured by batch.trim_padding; and a
pipeline padded per batch to its longest sample (no padding at all) gives no padding finding."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

import accel
from accel.core.machine import describe_machine
from accel.optimizing.optimizers import OPTIMIZERS, Context, make_config
from accel.optimizing.search.fidelity import compare_outputs
from accel.profiling.analyzers import analyze
from accel.profiling.data import BatchPadding
from accel.profiling.padding_measure import measure_padding
from tests.profiling.analyzers.recorded import loader_machine, recorded

REAL = Path(__file__).resolve().parents[1] / "real"
WIDTH = 32


def _row(length: int, pad: int = 0) -> torch.Tensor:
    return torch.tensor([7 + i % 5 for i in range(length)] + [pad] * (WIDTH - length))


def _samples(lengths: list[int], *, mask: bool = True) -> list[dict[str, torch.Tensor]]:
    samples = []
    for n in lengths:
        sample = {"input_ids": _row(n)}
        if mask:
            sample["attention_mask"] = (torch.arange(WIDTH) < n).long()
        samples.append(sample)
    return samples


def _collate(samples):
    return torch.utils.data.default_collate(samples)


def test_padding_already_in_the_samples_is_read_from_the_attention_mask():
    samples = _samples([5, 9, 3, 12])
    padding = measure_padding(samples, _collate(samples))
    assert padding.measured_from == "attention_mask"
    assert padding.real_elements == 29 and padding.padded_elements == 4 * WIDTH
    assert padding.sample_lengths == (5, 9, 3, 12)
    assert padding.trimmable_elements == 4 * (WIDTH - 12)  # the columns past the longest sample


def test_without_a_mask_equal_pad_runs_at_the_row_ends_are_padding():
    samples = _samples([5, 9, 3, 12], mask=False)
    padding = measure_padding(samples, _collate(samples))
    assert padding.measured_from == "pad_runs"
    assert padding.sample_lengths == (5, 9, 3, 12)
    assert padding.trimmable_elements == 4 * (WIDTH - 12)


def test_rows_ending_in_one_shared_token_or_unequal_values_are_not_padding():
    ends_with_sep = torch.stack([torch.cat([torch.randint(5, 50, (WIDTH - 1,)), torch.tensor([3])]) for _ in range(4)])
    samples = list(ends_with_sep)
    assert measure_padding(samples, ends_with_sep).padding_share == 0.0
    features = torch.randint(0, 1000, (8, WIDTH))  # categorical ids: no common last value
    assert measure_padding(list(features), features).padding_share == 0.0
    images = torch.zeros(4, 3, 8, 8)  # floats are never token ids
    assert measure_padding(list(images), images).padding_share == 0.0


def test_padding_added_by_the_collate_is_still_measured_from_shapes():
    samples = [torch.ones(n, dtype=torch.long) for n in (4, 8)]
    batch = torch.nn.utils.rnn.pad_sequence(samples, batch_first=True)
    padding = measure_padding(samples, batch)
    assert padding.measured_from == "shapes" and padding.real_elements == 12 and padding.padded_elements == 16


def _recorded_padding(*paddings: BatchPadding):
    data = recorded(0.0, 0.0, 10.0)
    data.batch_size = len(paddings[0].sample_lengths)
    data.padding = list(paddings)
    return data


def test_the_analyzer_recommends_trimming_padding_made_before_batching():
    samples = _samples([5, 9, 3, 12])
    padding = measure_padding(samples, _collate(samples))
    (finding,) = analyze(_recorded_padding(padding, padding), loader_machine(), ["padding"])
    assert finding.recommendations == ["batch.trim_padding"]
    assert finding.evidence["measured_from"] == ["attention_mask"]
    assert finding.impact == pytest.approx(finding.evidence["model_time_share"] * (WIDTH - 12) / WIDTH)
    assert "read from the attention mask" in finding.summary and "cutting them per batch" in finding.summary


def test_pad_runs_without_a_mask_are_named_but_given_no_cure():
    samples = _samples([5, 9, 3, 12], mask=False)
    (finding,) = analyze(_recorded_padding(measure_padding(samples, _collate(samples))), loader_machine(), ["padding"])
    assert finding.recommendations == [] and finding.impact == 0.0
    assert "no attention_mask" in finding.summary


def test_bucketing_stays_the_cure_for_padding_by_the_collate():
    padding = BatchPadding(real_elements=40, padded_elements=64, sample_lengths=(4, 16, 4, 16))
    (finding,) = analyze(_recorded_padding(padding, padding), loader_machine(), ["padding"])
    assert finding.recommendations == ["batch.bucket"]


def test_trimmable_padding_must_be_padding():
    with pytest.raises(ValueError, match="trimmable"):
        BatchPadding(real_elements=10, padded_elements=12, trimmable_elements=4)


# --- the real corpus pipeline: a transformers BERT fed by a tokenizer padding to max_length ------


@pytest.fixture(scope="module")
def corpus() -> ModuleType:
    pytest.importorskip("transformers")
    spec = importlib.util.spec_from_file_location("bert_maxlen_tokenizer", REAL / "bert_maxlen_tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_trim_padding_cuts_columns_and_keeps_each_result(corpus, tmp_path):
    pipeline = corpus.pipeline().replace(source=corpus.make_sentences(24))
    optimizer = OPTIMIZERS.get("batch.trim_padding")
    context = Context(machine=describe_machine(), workdir=tmp_path)
    assert optimizer.applicable(pipeline, context) is None
    applied = optimizer.apply(pipeline, make_config(optimizer, {}), context)
    batch = next(iter(applied.pipeline.iter_batches(limit_batches=1)))
    lengths = batch["attention_mask"].sum(dim=1)
    assert batch["input_ids"].shape[1] == int(lengths.max()) < corpus.MAX_LENGTH
    expected, got = pipeline.run(), applied.pipeline.run()
    assert got[0]["last_hidden_state"].shape[0] == int(lengths[0])  # each sample's real tokens
    assert compare_outputs(expected, got).cosine > 0.9999
    assert optimizer.applicable(applied.pipeline, context) == "the batches are already trimmed"
    restored = optimizer.restore(pipeline, make_config(optimizer, {}), applied.state, tmp_path)
    assert compare_outputs(expected, restored.run()).cosine > 0.9999


@pytest.mark.slow
def test_profile_names_padding_made_by_the_tokenizer(corpus, machine):
    report = accel.profile(REAL / "bert_maxlen_tokenizer.py", machine=machine, budget_seconds=3.0)
    assert report.primary == "padding", [(f.kind, f.impact) for f in report.findings]
    finding = report.finding("padding")
    assert finding.evidence["padding_share"] > 0.5
    assert finding.evidence["measured_from"] == ["attention_mask"]
    assert finding.recommendations == ["batch.trim_padding"]


@pytest.mark.slow
def test_tight_padding_gives_no_padding_finding(corpus, machine):
    report = accel.profile(corpus.tight_pipeline(), machine=machine, budget_seconds=3.0)
    assert "padding" not in [f.kind for f in report.findings]
    assert OPTIMIZERS.get("batch.trim_padding").applicable(corpus.tight_pipeline(), None) is not None


@pytest.mark.slow
def test_the_default_recipe_reaches_the_cure_with_outputs_intact(tmp_path):
    """Through the console script, as a user runs it (in its own process: the tokenizer's and the
    runtimes' thread pools of a long optimize stay out of the test process)."""
    import json
    import os
    import subprocess
    import sys

    pytest.importorskip("transformers")
    file = tmp_path / "bert_maxlen_tokenizer.py"
    file.write_text((REAL / "bert_maxlen_tokenizer.py").read_text())
    out, report = tmp_path / "out", tmp_path / "optimize.json"
    command = [sys.executable, "-m", "accel", "optimize", str(file), "--recipe", "default", "--budget", "120"]
    done = subprocess.run(
        [*command, "--out", str(out), "--json", str(report)], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    steps = json.loads(report.read_text())["steps"]
    cures = [s for s in steps if s["optimizer"] in ("batch.trim_padding", "batch.bucket")]
    assert cures and cures[0]["verdict"] != "skipped", [(s["optimizer"], s["reason"]) for s in steps]
    kept = [s["optimizer"] for s in steps if s["verdict"] == "accepted"]
    if not {"batch.trim_padding", "batch.bucket"} & set(kept):
        # A busy machine may leave the decision undecided, never decided wrongly.
        assert os.getloadavg()[0] > (os.cpu_count() or 1), [(s["optimizer"], s["reason"]) for s in cures]
        assert any("too noisy" in s["reason"] for s in cures), [(s["optimizer"], s["reason"]) for s in cures]
        return
    baseline, locked = accel.load(file), accel.load(file, lock=out / "accel.lock.yaml")
    assert compare_outputs(baseline.run(), locked.run()).cosine > 0.9999
