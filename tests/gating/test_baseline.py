"""Baselines: versioned schema, atomic writes, refusal of corrupt, foreign and incompatible files."""

from __future__ import annotations

import json

import pytest

from accel.gating.baseline import (
    BASELINE_SCHEMA,
    MAX_RUNS,
    Baseline,
    BaselineError,
    counts_fingerprint,
    load_baseline,
    merged,
    proposed_path,
    save_baseline,
    with_counts,
)
from accel.gating.bench import Replicate, environment, environment_mismatch

COUNTS = {"flops": 1000, "bytes_moved": 4000, "op_count": 7, "parameter_bytes": 256}


def replicates(scale: float = 1.0) -> tuple[Replicate, ...]:
    return tuple(
        Replicate(
            median_seconds=1e-3 * scale * (1 + i / 100),
            p90_seconds=2e-3 * scale,
            p99_seconds=3e-3 * scale,
            calls=50,
            batch_samples=16,
            peak_memory_bytes=4096,
        )
        for i in range(4)
    )


def sample(runs: int = 2) -> Baseline:
    env = environment()
    return Baseline(
        target="p.py",
        environment=env,
        runs=tuple(replicates(1 + r / 10) for r in range(runs)),
        counts=COUNTS,
        created_utc="now",
        counts_fingerprint=counts_fingerprint(env),
    )


def test_round_trip(tmp_path):
    path = save_baseline(tmp_path / "b.json", sample())
    loaded = load_baseline(path)
    assert loaded == sample()
    assert json.loads(path.read_text())["schema"] == BASELINE_SCHEMA
    assert loaded.values("latency_seconds")[0] == pytest.approx(1e-3)
    assert [p.name for p in tmp_path.iterdir()] == ["b.json"]  # no temporary file left behind


def test_corrupt_json_is_refused(tmp_path):
    path = tmp_path / "b.json"
    save_baseline(path, sample())
    path.write_text(path.read_text()[:40])
    with pytest.raises(BaselineError, match="corrupt"):
        load_baseline(path)


def test_missing_fields_are_corrupt(tmp_path):
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"schema": BASELINE_SCHEMA, "target": "p.py"}))
    with pytest.raises(BaselineError, match="corrupt"):
        load_baseline(path)
    data = sample().to_dict()
    data["runs"][0][0]["median_seconds"] = 1.0  # above its own p90: not a real measurement
    path.write_text(json.dumps(data))
    with pytest.raises(BaselineError, match="replicate is invalid"):
        load_baseline(path)


def test_foreign_json_is_refused(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"schema": "accel.profile/1", "target": "p.py"}))
    with pytest.raises(BaselineError, match="not an accel baseline") as info:
        load_baseline(path)
    assert "--save-baseline" in info.value.hint
    path.write_text("[1, 2, 3]")
    with pytest.raises(BaselineError, match="not an accel baseline"):
        load_baseline(path)


def test_version_mismatch_is_refused(tmp_path):
    path = tmp_path / "b.json"
    data = sample().to_dict()
    data["schema"] = "accel.baseline/3"
    path.write_text(json.dumps(data))
    with pytest.raises(BaselineError, match="accel.baseline/3"):
        load_baseline(path)


def test_a_version_1_baseline_reads_as_one_run(tmp_path):
    path = tmp_path / "v1.json"
    old = {
        "schema": "accel.baseline/1",
        "target": "p.py",
        "environment": environment(),
        "counts": COUNTS,
        "replicates": [r.to_dict() for r in replicates()],
    }
    path.write_text(json.dumps(old))
    loaded = load_baseline(path)
    assert len(loaded.runs) == 1 and len(loaded.replicates) == 4
    assert loaded.counts_fingerprint["torch_version"] == environment()["torch_version"]


def test_runs_merge_newest_kept_and_refuse_what_should_be_a_rebaseline():
    stored = sample(runs=2)
    grown = merged(stored, sample(runs=1))
    assert len(grown.runs) == 3 and grown.run_values("latency_seconds")[2][0] == pytest.approx(1e-3)
    assert len(merged(sample(runs=MAX_RUNS), sample(runs=3)).runs) == MAX_RUNS
    elsewhere = Baseline("p.py", {**environment(), "cpu_model": "Other"}, (replicates(),), COUNTS)
    with pytest.raises(BaselineError, match="re-baseline|another environment"):
        merged(stored, elsewhere)
    changed = Baseline("p.py", environment(), (replicates(),), {**COUNTS, "flops": 2000})
    with pytest.raises(BaselineError, match="flops"):
        merged(stored, changed)


def test_missing_file(tmp_path):
    with pytest.raises(BaselineError, match="no baseline"):
        load_baseline(tmp_path / "nope.json")


def test_environment_mismatch_names_the_fields():
    here = environment()
    assert environment_mismatch(here, dict(here)) == []
    other = {**here, "cpu_model": "Some Other CPU", "threads": 64}
    found = environment_mismatch(other, here)
    assert any(f.startswith("cpu_model") for f in found) and any(f.startswith("threads") for f in found)


def test_proposed_baseline_is_a_separate_file(tmp_path):
    original = tmp_path / "b.json"
    assert proposed_path(original) == tmp_path / "b.proposed.json"
    updated = with_counts(sample(), {**COUNTS, "flops": 10}, {"torch_version": "9.9", "device": "cpu"})
    assert updated.counts_fingerprint == {"torch_version": "9.9", "device": "cpu"}
    assert updated.counts["flops"] == 10 and sample().counts["flops"] == 1000
