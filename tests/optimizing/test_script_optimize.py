"""`accel optimize SCRIPT` tunes a plain training script's DataLoaders; `accel run SCRIPT --lock` re-applies it."""

from __future__ import annotations

import io
import json
import textwrap
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from torch.utils.data import DataLoader
from typer.testing import CliRunner

import accel
from accel.cli import app
from accel.cli.optimize import render_optimize
from accel.core.errors import LockError
from accel.optimizing.decision import KeepTest
from accel.optimizing.lock import Lock, LockEntry, read_lock
from accel.optimizing.optimizers.loader_tune import Setting
from accel.optimizing.script import ACCEPTED, REVERTED, ScriptSetting, candidates, judge
from accel.optimizing.script_loader import apply_loader_settings
from accel.optimizing.script_trial import Trial, pass_edges, steady_state
from accel.profiling.script import LoaderCall
from tests.paths import REAL

REAL_SCRIPT = REAL / "finetune_text_classifier.py"
runner = CliRunner()

# A Dataset that burns ~3 ms of Python per sample, and a step that waits as long per batch (as a
# CPU waits on a GPU step): one worker overlaps the two, about 2x, even with one core free.
LOADER_BOUND = """
import sys, time
import torch
from torch.utils.data import DataLoader, Dataset

class Slow(Dataset):
    def __len__(self):
        return 128
    def __getitem__(self, index):
        end = time.perf_counter() + 0.003
        while time.perf_counter() < end:
            pass
        return torch.full((8,), float(index))

torch.manual_seed(0)
model = torch.nn.Linear(8, 2)
loader = DataLoader(Slow(), batch_size=16, shuffle=True)
if len(sys.argv) > 1:
    open(sys.argv[1], "w").write(f"{loader.num_workers} {torch.get_num_threads()}")
for batch in loader:
    model(batch).sum().backward()
    time.sleep(0.003 * len(batch))
"""

# Data precomputed, the step is the time: no loader setting can help.
MODEL_BOUND = """
import time
import torch
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
data = TensorDataset(torch.randn(128, 8))
for (batch,) in DataLoader(data, batch_size=16):
    time.sleep(0.02)
"""

# __getitem__ draws from Python's global RNG: worker processes seed it apart, so their samples differ.
GLOBAL_RNG = """
import random
import torch
from torch.utils.data import DataLoader, Dataset

class Noisy(Dataset):
    def __len__(self):
        return 64
    def __getitem__(self, index):
        return torch.tensor([random.random()])

random.seed(0)
for batch in DataLoader(Noisy(), batch_size=8):
    pass
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_loader_bound_script_keeps_workers_and_accel_run_applies_them(tmp_path):
    script = _write(tmp_path, "train.py", LOADER_BOUND)
    before = script.read_bytes()
    original_init = DataLoader.__init__
    seen = tmp_path / "seen.txt"  # the script writes its loader's num_workers to its first argument
    result = accel.optimize(script, "default", out_dir=tmp_path / "out", budget_seconds=4, args=(str(seen),))
    assert DataLoader.__init__ is original_init and script.read_bytes() == before
    assert seen.read_text().split()[0].isdigit()
    assert result.chosen is not None and result.chosen.num_workers > 0, result.to_dict()
    kept = [s for s in result.steps if s.verdict == ACCEPTED]
    assert len(kept) == 1 and kept[0].speedup_ci[0] > 1.03 and kept[0].fidelity == {"batches": "same batches"}
    assert all(s.setup_seconds > 0 for s in result.steps)  # worker start-up, apart from the rate
    lock = read_lock(result.lock_path)
    assert lock.kind == "script" and lock.entries[0].state["num_workers"] == result.chosen.num_workers
    assert lock.entries[0].params == {"threads": result.chosen_threads}  # accel run applies it again
    got = tmp_path / "got.txt"
    ran = runner.invoke(app, ["run", str(script), "--lock", str(result.lock_path), "--", str(got)])
    assert ran.exit_code == 0, ran.output
    assert got.read_text() == f"{result.chosen.num_workers} {result.chosen_threads}"
    with apply_loader_settings(result.lock_path, script) as setting:
        assert DataLoader(list(range(4))).num_workers == setting.num_workers
    assert DataLoader(list(range(4))).num_workers == 0


def test_model_bound_script_keeps_nothing_and_no_loader_says_so(tmp_path):
    result = accel.optimize(_write(tmp_path, "heavy.py", MODEL_BOUND), budget_seconds=3)
    assert result.chosen is None and result.steps, result.to_dict()
    assert all(s.verdict == REVERTED for s in result.steps)
    plain = accel.optimize(_write(tmp_path, "plain.py", "import torch\nx = torch.ones(3) * 2\n"))
    assert plain.chosen is None and plain.message.startswith("no loader to tune")


def test_guard_reverts_a_setting_whose_workers_change_the_batches(tmp_path):
    result = accel.optimize(_write(tmp_path, "noisy.py", GLOBAL_RNG), budget_seconds=3, out_dir=tmp_path / "out")
    with_workers = [s for s in result.steps if s.params["num_workers"] > 0]
    assert with_workers and result.chosen is None
    for step in with_workers:
        assert step.verdict == REVERTED and step.fidelity == {"batches": "batches differ"}
        assert "pass 1, batch 1 differs" in step.reason and "global RNG" in step.reason
    assert read_lock(tmp_path / "out").entries == ()


def test_script_lock_round_trips_and_a_lock_without_kind_reads_as_a_pipeline_lock(tmp_path):
    lock = Lock("train.py", "ab" * 32, (LockEntry("script.loader", {}, {"num_workers": 2}),), kind="script")
    assert Lock.from_dict(lock.to_dict()) == lock
    old = {k: v for k, v in lock.to_dict().items() if k != "kind"}
    assert Lock.from_dict(old).kind == "pipeline"
    with pytest.raises(LockError, match="kind 'notebook'"):
        Lock.from_dict(lock.to_dict() | {"kind": "notebook"})


def test_script_flag_runs_a_pipeline_file_as_a_script_and_the_table_renders(tmp_path):
    pipeline_file = _write(
        tmp_path, "model.py", "import torch\nmodel = torch.nn.Linear(2, 2)\nexample_inputs = (torch.ones(1, 2),)\n"
    )
    result = accel.optimize(pipeline_file, as_script=True, budget_seconds=1)
    assert result.message.startswith("no loader to tune")
    data = {**result.to_dict(), "rounds": 3, "steps": [judge_step().to_dict()], "lock_path": "out/accel.lock.yaml"}
    data |= {
        "baseline": {"samples_per_s": 100.0},
        "final": {"samples_per_s": 200.0},
        "speedup": 2.0,
        "speedup_ci": [1.9, 2.1],
    }
    out = Console(file=io.StringIO(), width=140, color_system=None)
    render_optimize(data, out)
    text = out.file.getvalue()
    assert "num_workers=2" in text and "same batches" in text and "2.00x [1.90, 2.10]" in text
    assert "accel run model.py --lock out/accel.lock.yaml" in text


def judge_step():
    same = {"pass 1, batch 1": "a"}
    trials = [[_trial(1.0, same)] * 3, [_trial(0.5, same)] * 3]
    settings = [ScriptSetting(None, 2), ScriptSetting(Setting(2), 2)]
    (step,) = judge(
        settings, ["as written", "num_workers=2"], trials, {}, _trial(1.0, same), KeepTest("throughput", 1.03)
    )
    return step


def _trial(rate: float, digests: dict[str, str]) -> Trial:
    return Trial(rate, 64, 0.0, 1, digests, (), 1.0)


def test_workers_are_also_tried_beside_fewer_threads_never_more():
    pairs = lambda found: [(s.loader.num_workers, s.threads) for s in found]  # noqa: E731
    # 2 cores at 2 threads: each worker count at the script's 2 threads, and at cores - workers
    assert pairs(candidates({"num_workers": 0}, cores=2, threads=2)) == [(1, 2), (1, 1), (2, 2), (2, 1)]
    # the script's own 2 workers are tried again beside 1 thread; they are not a candidate at their own 2
    assert pairs(candidates({"num_workers": 2}, cores=2, threads=2)) == [(0, 2), (1, 2), (1, 1), (2, 1)]
    # at 1 thread (--threads 1) there is nothing fewer to try
    assert pairs(candidates({"num_workers": 0}, cores=2, threads=1)) == [(1, 1), (2, 1)]
    # 8 cores at 4 threads: never more threads than the script ran with
    assert all(s.threads <= 4 for s in candidates({}, cores=8, threads=4))
    assert (7, 1) in pairs(candidates({}, cores=8, threads=4)) and (2, 4) in pairs(candidates({}, cores=8, threads=4))


# Records the DataLoader's num_workers and torch's thread count of every run, one line each.
RECORDS_RUNS = """
import sys
import torch
from torch.utils.data import DataLoader, TensorDataset

loader = DataLoader(TensorDataset(torch.arange(96.0)), batch_size=8)
with open(sys.argv[1], "a") as out:
    out.write(f"{loader.num_workers} {torch.get_num_threads()}\\n")
for (batch,) in loader:
    batch.sum()
"""


def test_each_trial_runs_at_its_own_thread_count(tmp_path):
    script, seen = _write(tmp_path, "train.py", RECORDS_RUNS), tmp_path / "seen.txt"
    result = accel.optimize(script, budget_seconds=1, threads=2, args=(str(seen),))
    runs = {tuple(int(v) for v in line.split()) for line in seen.read_text().splitlines()}
    searched = {(s.params["num_workers"], s.params["threads"]) for s in result.steps}
    assert (1, 1) in searched and (1, 2) in searched, result.steps  # one worker, beside 1 and 2 threads
    assert runs == searched | {(0, 2)}  # every candidate ran at its count; the script as written at 2
    names = [s.optimizer for s in result.steps]
    assert "num_workers=1, threads=1" in names and "num_workers=1" in names


def test_judge_keeps_only_the_fastest_faithful_setting_beyond_noise():
    same, other = {"pass 1, batch 1": "a"}, {"pass 1, batch 1": "b"}
    settings = [ScriptSetting(None, 2), *(ScriptSetting(Setting(w), 2) for w in (1, 2, 3))]
    names = ["as written", "num_workers=1", "num_workers=2", "num_workers=3"]
    trials = [
        [_trial(1.0, same)] * 3,
        [_trial(0.5, same)] * 3,  # 2x, same batches
        [_trial(0.25, other)] * 3,  # 4x, other batches
        [_trial(0.99, same)] * 3,  # not beyond 1.03
    ]
    steps = judge(settings, names, trials, {}, _trial(1.0, same), KeepTest("throughput", 1.03))
    assert [s.verdict for s in steps] == [ACCEPTED, REVERTED, REVERTED]
    assert steps[1].fidelity == {"batches": "batches differ"} and "not faster" in steps[2].reason


def test_steady_state_leaves_out_each_pass_first_batch_and_accel_digesting():
    calls = [
        LoaderCall(0.0, 1.0, 8, 2, True),  # start-up
        LoaderCall(1.5, 1.6, 8, 2, False),
        LoaderCall(2.0, 2.1, 8, 2, False),
        LoaderCall(2.5, 2.5, 0, 2, False, exhausted=True),
    ]
    assert steady_state(calls, {1: 0.1}) == (pytest.approx(0.9), 16, 2)
    # Stopped by the budget at a request at 3.0: the last batch's period ends there.
    assert steady_state(calls[:3], {}, 3.0) == (pytest.approx(1.5), 16, 2)


def test_a_pass_counts_its_start_up_and_its_end():
    calls = [
        LoaderCall(0.0, 0.5, 8, 2, True),  # workers starting
        LoaderCall(0.6, 0.6, 8, 2, False),
        LoaderCall(0.7, 0.7, 8, 2, False),
        LoaderCall(0.8, 0.85, 0, 2, False, exhausted=True),  # workers shut down
    ]
    firsts, ends, batches = pass_edges(calls, {})
    assert firsts == [pytest.approx(0.6)] and ends == [pytest.approx(0.05)] and batches == 3
    trial = Trial(0.1 / 8, 24, 0.5, 1, {}, (), 1.0, batch_seconds=0.1, first_batch_seconds=0.6, end_seconds=0.05)
    # Faster in the steady state than 0.25 s a batch without workers, yet a 3-batch pass is slower.
    assert trial.pass_seconds_per_sample(3) == pytest.approx((0.6 + 2 * 0.1 + 0.05) / 24)
    assert trial.pass_seconds_per_sample(3) > 0.25 / 8 > trial.pass_seconds_per_sample(100)


def test_lock_for_another_script_or_a_pipeline_lock_is_one_line_exit_2(tmp_path):
    script = _write(tmp_path, "train.py", GLOBAL_RNG)
    other = _write(tmp_path, "other.py", GLOBAL_RNG)
    result = accel.optimize(script, budget_seconds=1, out_dir=tmp_path / "out")
    ran = runner.invoke(app, ["run", str(other), "--lock", str(result.lock_path)])
    lines = [line for line in ran.output.splitlines() if line.strip()]
    assert ran.exit_code == 2 and len(lines) == 1 and "written for train.py, not other.py" in lines[0]
    script.write_text(script.read_text() + "# edited\n")
    ran = runner.invoke(app, ["run", str(script), "--lock", str(result.lock_path)])
    assert ran.exit_code == 2 and "train.py changed since" in ran.output and "Traceback" not in ran.output
    with pytest.raises(LockError, match="not a pipeline's optimizations"):
        accel.load(script, lock=result.lock_path)
    ran = runner.invoke(app, ["verify", str(result.lock_path)])
    assert ran.exit_code == 2 and "accel verify re-times pipeline locks only" in ran.output
    pipeline_lock = yaml.safe_load(result.lock_path.read_text()) | {"kind": "pipeline"}
    (tmp_path / "pipeline.lock.yaml").write_text(yaml.safe_dump(pipeline_lock))
    ran = runner.invoke(app, ["run", str(script), "--lock", str(tmp_path / "pipeline.lock.yaml"), "--force"])
    assert ran.exit_code == 2 and "is a pipeline lock" in ran.output


@pytest.mark.slow
def test_real_finetune_script_through_optimize_script_mode(tmp_path):
    """The corpus script, unchanged, end to end (about a minute on a loaded 2-core machine). Whether
    workers pay depends on the free cores, so only what must hold everywhere is asserted."""
    out, report = tmp_path / "out", tmp_path / "result.json"
    options = ["--budget", "8", "--threads", "1", "--out", str(out), "--json", str(report)]
    ran = runner.invoke(app, ["optimize", str(REAL_SCRIPT), *options])
    assert ran.exit_code == 0, ran.output
    data = json.loads(report.read_text())
    assert data["mode"] == "script" and data["steps"]
    # Its shuffle comes from torch's RNG in the main process: workers yield the very same batches.
    assert all(step["fidelity"] == {"batches": "same batches"} for step in data["steps"]), data["steps"]
    lock = read_lock(out)
    assert lock.kind == "script" and lock.pipeline_file == REAL_SCRIPT.name
    assert [e.state["num_workers"] for e in lock.entries] == ([data["chosen"]["num_workers"]] if data["kept"] else [])
