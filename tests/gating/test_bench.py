"""accel bench: fresh-process replicates, counts from accel.core.counts, worker errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from accel.core.errors import AccelError
from accel.gating.bench import BenchConfig, BenchError, Side, bench, run_replicate
from tests.paths import PLANTED

GATE_MLP = PLANTED / "gate_mlp.py"
QUICK = BenchConfig(replicates=2, warmup_calls=1, min_calls=5, budget_seconds=0.05, threads=1)


@pytest.mark.slow
def test_counts_come_from_a_worker_and_grow_with_planted_layers():
    plain = run_replicate(Side(GATE_MLP.resolve()), QUICK, timing=False, counts=True)
    grown = run_replicate(
        Side(GATE_MLP.resolve(), env=(("ACCEL_GATE_EXTRA_LAYERS", "2"),)), QUICK, timing=False, counts=True
    )
    assert plain["pid"] != os.getpid()
    assert plain["counts"]["flops"] > 0 and plain["counts"]["parameter_bytes"] == 128 * 128 * 4
    assert grown["counts"]["flops"] > plain["counts"]["flops"]
    assert grown["counts"]["op_count"] > plain["counts"]["op_count"]
    assert grown["counts"]["parameter_bytes"] > plain["counts"]["parameter_bytes"]
    assert plain["environment"]["torch_version"] and plain["environment"]["cores"] >= 1


@pytest.mark.slow
def test_inline_counts_match_a_fresh_process():
    inline = run_replicate(Side(GATE_MLP.resolve()), BenchConfig(launcher="inline"), timing=False, counts=True)
    spawned = run_replicate(Side(GATE_MLP.resolve()), QUICK, timing=False, counts=True)
    assert inline["counts"] == spawned["counts"]
    with pytest.raises(ValueError, match="fresh process"):
        run_replicate(Side(GATE_MLP.resolve()), BenchConfig(launcher="inline"), timing=True)


@pytest.mark.slow
def test_replicates_are_fresh_processes_with_per_call_statistics():
    result = bench(GATE_MLP, config=QUICK)
    assert len(result.replicates) == 2
    for replicate in result.replicates:
        assert 0 < replicate.median_seconds <= replicate.p90_seconds <= replicate.p99_seconds
        assert replicate.calls >= QUICK.min_calls and replicate.batch_samples == 16
        assert replicate.peak_memory_bytes is not None and replicate.peak_memory_bytes > 0
    summary = result.summary()
    assert summary["samples_per_s"] == pytest.approx(16 / summary["median_seconds"], rel=0.5)
    assert result.counts["op_count"] > 0
    assert result.to_dict()["schema"] == "accel.bench/1"


@pytest.mark.slow
def test_a_failing_pipeline_is_a_bench_error(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\nmodel = torch.nn.Linear(4, 4)\nexample_inputs = (torch.randn(2, 5),)\n")
    with pytest.raises(BenchError, match="measuring"):
        run_replicate(Side(broken), QUICK, timing=True)


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(AccelError, match="no such file"):
        bench(tmp_path / "missing.py", config=QUICK)
    with pytest.raises(ValueError, match="launcher"):
        BenchConfig(launcher="thread")
    with pytest.raises(ValueError, match="replicates"):
        BenchConfig(replicates=0)


@pytest.mark.slow
def test_forked_replicates_from_a_parent_that_never_ran_torch():
    # The gate benchmark forks replicates; the parent imports torch but runs nothing, as here.
    code = (
        "import os, json; from pathlib import Path; from accel.gating.bench import BenchConfig, Side, run_replicate; "
        "c = BenchConfig(launcher='fork', threads=1, warmup_calls=1, min_calls=5, budget_seconds=0.05, memory=False); "
        f"s = Side(Path({str(GATE_MLP.resolve())!r})); "
        "got = [run_replicate(s, c) for _ in range(2)]; "
        "print(json.dumps({'parent': os.getpid(), 'pids': [g['pid'] for g in got], "
        "'median': [g['replicate']['median_seconds'] for g in got]}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(set(data["pids"])) == 2 and data["parent"] not in data["pids"]
    assert all(m > 0 for m in data["median"])


def test_start_only_settings_reach_a_spawned_replicate_at_start_and_fork_refuses_them():
    from accel.gating.process import refuse_start_only_env, start_env

    side = Side(GATE_MLP.resolve(), env=(("OMP_NUM_THREADS", "1"), ("ACCEL_GATE_EXTRA_LAYERS", "1")))
    env = start_env(side, BenchConfig(threads=2))
    assert env["OMP_NUM_THREADS"] == "1" and env["ACCEL_GATE_EXTRA_LAYERS"] == "1"  # the side's own value wins
    assert start_env(Side(GATE_MLP), BenchConfig(threads=2))["OMP_NUM_THREADS"] == "2"
    with pytest.raises(BenchError, match="OMP_NUM_THREADS"):
        refuse_start_only_env(side)


@pytest.mark.slow
def test_a_replicate_is_pinned_and_records_the_user_modules_it_imported(tmp_path):
    (tmp_path / "helper_layers.py").write_text("import torch\nmodel = torch.nn.Linear(4, 4)\n")
    (tmp_path / "pipe.py").write_text(
        "import os, torch\nfrom helper_layers import model\nexample_inputs = (torch.randn(2, 4),)\n"
        "assert os.environ['OMP_NUM_THREADS'] == '1'\n"
    )
    config = BenchConfig(replicates=1, warmup_calls=1, min_calls=5, budget_seconds=0.05, threads=1, cores=(0,))
    got = run_replicate(Side(tmp_path / "pipe.py", cwd=tmp_path), config)
    assert got["environment"]["cores"] == 1 and got["environment"]["threads"] == 1
    assert got["modules"]["helper_layers"] == str((tmp_path / "helper_layers.py").resolve())
    assert not any(name.startswith("torch") for name in got["modules"])
