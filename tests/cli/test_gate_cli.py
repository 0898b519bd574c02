"""accel bench / accel gate through the CLI: planted regressions, --against on a real git repo,
report files, exit codes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from accel.cli import app
from accel.gating.bench import environment
from tests.paths import PLANTED

GATE_MLP = PLANTED / "gate_mlp.py"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def counts_baseline(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("baseline") / "gate_mlp.json"
    done = invoke("bench", GATE_MLP, "--counts-only", "--save-baseline", path)
    assert done.exit_code == 0, done.output
    assert "flops" in done.output
    return path


@pytest.mark.slow
def test_unchanged_target_passes_repeated_runs(counts_baseline, tmp_path):
    for _ in range(2):
        done = invoke("gate", GATE_MLP, "--baseline", counts_baseline, "--counts-only", "--json", tmp_path / "g.json")
        assert done.exit_code == 0, done.output
        assert "PASS" in done.output
    data = json.loads((tmp_path / "g.json").read_text())
    assert data["verdict"] == "pass" and data["counts"]["baseline"] == data["counts"]["candidate"]


@pytest.mark.slow
def test_planted_extra_layers_fail_the_gate_with_reports(counts_baseline, tmp_path, monkeypatch):
    monkeypatch.setenv("ACCEL_GATE_EXTRA_LAYERS", "2")
    junit, md, js = tmp_path / "junit.xml", tmp_path / "summary.md", tmp_path / "gate.json"
    done = invoke(
        "gate",
        GATE_MLP,
        "--baseline",
        counts_baseline,
        "--counts-only",
        "--junit",
        junit,
        "--markdown",
        md,
        "--json",
        js,
    )
    assert done.exit_code == 1, done.output
    suite = ET.parse(junit).getroot().find("testsuite")
    failed = {c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None}
    assert {"flops", "op_count", "parameter_bytes"} <= failed
    rows = [line for line in md.read_text().splitlines() if line.startswith("| ") and "metric" not in line]
    assert "FAIL" in md.read_text() and "fail" in rows[0]
    assert json.loads(js.read_text())["verdict"] == "fail"
    assert not counts_baseline.with_name("gate_mlp.proposed.json").exists()  # a failed run never becomes one


@pytest.mark.slow
def test_a_count_drop_is_reported_with_a_proposed_baseline(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCEL_GATE_EXTRA_LAYERS", "1")
    baseline = tmp_path / "b.json"
    assert invoke("bench", GATE_MLP, "--counts-only", "--save-baseline", baseline).exit_code == 0
    monkeypatch.delenv("ACCEL_GATE_EXTRA_LAYERS")
    before = baseline.read_text()
    done = invoke("gate", GATE_MLP, "--baseline", baseline, "--counts-only")
    assert done.exit_code == 0, done.output
    assert "improved" in done.output
    assert baseline.read_text() == before  # the baseline itself is never rewritten by a gate run
    proposed = json.loads((tmp_path / "b.proposed.json").read_text())
    assert proposed["counts"]["flops"] < json.loads(before)["counts"]["flops"]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True, capture_output=True
    )


@pytest.mark.slow
def test_against_a_git_ref_in_a_temporary_worktree(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    target = repo / "model.py"
    shutil.copy(GATE_MLP, target)
    _git(repo, "init", "-q")
    _git(repo, "add", "model.py")
    _git(repo, "commit", "-qm", "first")
    target.write_text(target.read_text().replace('"ACCEL_GATE_EXTRA_LAYERS", "0"', '"ACCEL_GATE_EXTRA_LAYERS", "3"'))
    _git(repo, "commit", "-qam", "more layers")
    unchanged = invoke("gate", target, "--against", "HEAD", "--counts-only")
    assert unchanged.exit_code == 0, unchanged.output
    worse = invoke("gate", target, "--against", "HEAD~1", "--counts-only", "--junit", tmp_path / "j.xml")
    assert worse.exit_code == 1, worse.output
    assert ET.parse(tmp_path / "j.xml").getroot().find("testsuite").get("failures") != "0"
    listed = subprocess.run(["git", "worktree", "list"], cwd=repo, capture_output=True, text=True).stdout
    assert len(listed.strip().splitlines()) == 1  # the temporary worktree is gone
    bad_ref = invoke("gate", target, "--against", "no-such-ref", "--counts-only")
    assert bad_ref.exit_code == 2 and "git" in bad_ref.output


def _foreign_baseline(path: Path) -> Path:
    env = {**environment(), "cpu_model": "Elsewhere 9000"}
    reps = [{"median_seconds": 1e-3, "p90_seconds": 1e-3, "p99_seconds": 1e-3, "calls": 10, "batch_samples": 16}] * 6
    path.write_text(
        json.dumps(
            {
                "schema": "accel.baseline/2",
                "target": "gate_mlp.py",
                "environment": env,
                "runs": [reps, reps],
                "counts": None,
            }
        )
    )
    return path


@pytest.mark.slow
def test_counts_from_another_torch_say_rebaseline_never_fail(counts_baseline, tmp_path):
    data = json.loads(counts_baseline.read_text())
    data["counts_fingerprint"]["torch_version"] = "2.0.0"
    data["counts"]["flops"] = 1  # would be a huge regression if it were compared
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    loose = invoke("gate", GATE_MLP, "--baseline", old, "--counts-only")
    assert loose.exit_code == 0, loose.output
    assert "re-baseline" in loose.output and "2.0.0" in loose.output and "FAIL" not in loose.output
    strict = invoke("gate", GATE_MLP, "--baseline", old, "--counts-only", "--strict")
    assert strict.exit_code == 3, strict.output


USER_PACKAGE = """import torch
from torch import nn

LAYERS = {layers}
torch.manual_seed(0)
model = nn.Sequential(*[nn.Linear(32, 32) for _ in range(LAYERS)]).eval()
example_inputs = (torch.randn(4, 32),)
"""


def _src_layout_repo(tmp_path: Path, pipeline: str = "from mylib import example_inputs, model  # noqa: F401\n"):
    """A user's repo: the pipeline file imports its model from a src/ layout package."""
    repo = tmp_path / "repo"
    (repo / "src" / "mylib").mkdir(parents=True)
    (repo / "model.py").write_text(pipeline)
    (repo / "src" / "mylib" / "__init__.py").write_text(USER_PACKAGE.format(layers=2))
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "first")
    (repo / "src" / "mylib" / "__init__.py").write_text(USER_PACKAGE.format(layers=4))
    _git(repo, "commit", "-qam", "a regression in the user's own package")
    return repo


@pytest.mark.slow
def test_against_measures_the_user_package_of_each_checkout(tmp_path):
    repo = _src_layout_repo(tmp_path)
    done = invoke("gate", repo / "model.py", "--against", "HEAD~1", "--counts-only", "--json", tmp_path / "g.json")
    assert done.exit_code == 1, done.output  # only the package changed: A/A before the fix
    data = json.loads((tmp_path / "g.json").read_text())
    assert data["counts"]["candidate"]["flops"] == 2 * data["counts"]["baseline"]["flops"]
    base_file, cand_file = data["modules"]["baseline"]["mylib"], data["modules"]["candidate"]["mylib"]
    assert cand_file == str((repo / "src" / "mylib" / "__init__.py").resolve())
    assert "accel-gate-" in base_file and not base_file.startswith(str(repo.resolve()))


@pytest.mark.slow
def test_against_refuses_a_module_from_the_current_checkout(tmp_path):
    # A hard-coded absolute path makes the baseline side import today's code: refused, exit 2.
    lib = (tmp_path / "repo" / "lib").resolve()
    pipeline = f"import sys\nsys.path.insert(0, {str(lib)!r})\nfrom helper import example_inputs, model  # noqa\n"
    repo = _src_layout_repo(tmp_path, pipeline)
    lib.mkdir()
    (lib / "helper.py").write_text(USER_PACKAGE.format(layers=1))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "helper")
    done = invoke("gate", repo / "model.py", "--against", "HEAD~1", "--counts-only")
    assert done.exit_code == 2, done.output
    assert "current checkout" in done.output and "helper" in done.output


HOST_SLOW_PIPELINE = (PLANTED / "gate_2ms.py").read_text()


@pytest.mark.slow
def test_timed_against_fails_a_slowdown_the_counts_cannot_see(tmp_path):
    # A large planted effect (host-side Python work, 3x the tensor work; identical tensor ops) and a
    # generous threshold: a timed FAIL that noise on a loaded CI machine cannot flip.
    repo = tmp_path / "repo"
    repo.mkdir()
    target = repo / "model.py"
    target.write_text(HOST_SLOW_PIPELINE)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "first")
    target.write_text(HOST_SLOW_PIPELINE.replace('os.environ.get("ACCEL_GATE_HOST_SLOWDOWN", "0")', '"3.0"'))
    _git(repo, "commit", "-qam", "slow post-processing")
    done = invoke(
        "gate",
        target,
        "--against",
        "HEAD~1",
        "--threads",
        "1",
        "--max-slowdown",
        "50%",
        "--max-memory-growth",
        "300%",
        "--json",
        tmp_path / "g.json",
    )
    assert done.exit_code == 1, done.output
    assert re.search(r"gate: process pair 1/\d+ \(at most \d+\)", done.output)  # k of n, as bench says it
    data = json.loads((tmp_path / "g.json").read_text())
    verdicts = {v["metric"]: v for v in data["verdicts"]}
    assert verdicts["latency_seconds"]["verdict"] == "fail" and verdicts["latency_seconds"]["change"] > 0.5
    assert verdicts["latency_seconds"]["noise"] is not None
    assert verdicts["flops"]["verdict"] == "pass" and verdicts["op_count"]["verdict"] == "pass"
    assert data["pairs"] >= 6


@pytest.mark.slow
def test_environment_mismatch_is_invalid_and_strict_exits_3(tmp_path):
    baseline = _foreign_baseline(tmp_path / "b.json")
    loose = invoke("gate", GATE_MLP, "--baseline", baseline, "--json", tmp_path / "g.json")
    assert loose.exit_code == 0, loose.output
    assert "environment differs" in loose.output and "cpu_model" in loose.output
    strict = invoke("gate", GATE_MLP, "--baseline", baseline, "--strict", "--junit", tmp_path / "j.xml")
    assert strict.exit_code == 3, strict.output
    assert ET.parse(tmp_path / "j.xml").getroot().find("testsuite").get("errors") != "0"


def test_bad_input_exits_2(tmp_path):
    corrupt = tmp_path / "b.json"
    corrupt.write_text("{not json")
    done = invoke("gate", GATE_MLP, "--baseline", corrupt)
    assert done.exit_code == 2 and "corrupt" in done.output
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"schema": "accel.baseline/0", "target": "x"}))
    done = invoke("gate", GATE_MLP, "--baseline", old)
    assert done.exit_code == 2 and "accel.baseline/0" in done.output
    assert invoke("gate", GATE_MLP).exit_code == 2
    assert invoke("gate", GATE_MLP, "--baseline", corrupt, "--against", "HEAD").exit_code == 2
    assert invoke("gate", GATE_MLP, "--baseline", corrupt, "--max-slowdown", "lots").exit_code == 2
    assert invoke("gate", "calibrate", GATE_MLP, "extra").exit_code == 2
    assert invoke("gate", tmp_path / "missing.py", "--baseline", corrupt).exit_code == 2


@pytest.mark.slow
def test_timed_gate_and_calibrate_end_to_end(tmp_path):
    baseline = tmp_path / "timed.json"
    done = invoke("bench", GATE_MLP, "--replicates", "2", "--runs", "2", "--threads", "1", "--save-baseline", baseline)
    assert done.exit_code == 0, done.output
    assert "latency median" in done.output and "throughput" in done.output
    assert len(json.loads(baseline.read_text())["runs"]) == 2
    more = invoke("bench", GATE_MLP, "--replicates", "2", "--threads", "1", "--save-baseline", baseline, "--merge")
    assert more.exit_code == 0 and len(json.loads(baseline.read_text())["runs"]) == 3
    # Unchanged code against a stored baseline: timing is judged against the between-run spread,
    # so it may PASS or WARN, never FAIL.
    gated = invoke("gate", GATE_MLP, "--baseline", baseline, "--threads", "1", "--json", tmp_path / "g.json")
    assert gated.exit_code == 0, gated.output
    data = json.loads((tmp_path / "g.json").read_text())
    latency = next(v for v in data["verdicts"] if v["metric"] == "latency_seconds")
    assert latency["verdict"] in ("pass", "warn") and latency["samples"] == 2
    assert "between-run" in latency["reason"] and latency["noise"] > 0
    assert len(data["samples"]["candidate"]["latency_seconds"]) == 2
    calibrated = invoke(
        "gate",
        "calibrate",
        GATE_MLP,
        "--replicates",
        "2",
        "--threads",
        "1",
        "--max-slowdown",
        "0%",
        "--json",
        tmp_path / "c.json",
    )
    assert calibrated.exit_code == 0, calibrated.output
    assert "below the noise floor" in calibrated.output and "max_slowdown" in calibrated.output
    assert json.loads((tmp_path / "c.json").read_text())["pairs"] == 2


@pytest.mark.slow
def test_the_console_script_exits_1_on_a_regression(counts_baseline, tmp_path):
    env = {**__import__("os").environ, "ACCEL_GATE_EXTRA_LAYERS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "accel", "gate", str(GATE_MLP), "--baseline", str(counts_baseline), "--counts-only"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL" in done.stdout
