"""Multi-rank jobs: torchrun with accel's per-rank timing, per-rank traces, the straggler finding.

The torchrun tests run 2 gloo ranks on CPU over a few steps of a small model (slow: each start-up
imports torch in three processes). Each planted run also has the script write its own traces (the
lines docs/multirank.md gives), read back with --traces, so one launch checks both paths.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from accel.cli.render_profile import rank_table
from accel.core.errors import PipelineError, PipelineLoadError
from accel.profiling.multirank import launch as launch_module
from accel.profiling.multirank import traces
from accel.profiling.ranks import CollectiveCall, JobTimeline, RankStep, RankTimeline
from accel.profiling.report import Report
from accel.profiling.run import profile_ranks, profile_traces
from tests.paths import PLANTED
from tests.profiling.analyzers.recorded import job_report, rank_timeline

TRAIN = PLANTED / "mr_ddp_train.py"
RUN_TIMEOUT_SECONDS = 240
STEPS = "16"
# The balanced control's step is mostly the same data wait on both ranks and a small model, so a
# busy machine's scheduling noise stays small against the step (the planted script's docstring).
BALANCED = ("--sample-seconds", "0.002", "--hidden", "256")


# ---- recorded timelines: the analysis without launching anything -------------------------------


def test_blocked_time_is_booked_on_the_last_arrival_of_overlapping_calls():
    # Two DDP buckets in flight together: blocked from the second arrival to the last completion;
    # then one synchronous call on its own.
    calls = (CollectiveCall("a", 0.0, 0.5), CollectiveCall("a", 0.2, 0.6), CollectiveCall("b", 1.0, 1.1))
    timeline = RankTimeline(rank=0, steps=(RankStep(0.0, 2.0, 0.0),), calls=calls)
    assert timeline.blocked_seconds() == pytest.approx([0.0, 0.4, 0.1])


def test_report_json_keeps_the_schema_and_adds_ranks():
    from accel.profiling.multirank.merge import multirank_report

    job = JobTimeline(
        (rank_timeline(0, 0.002, 0.02, 0.005, 0.038), rank_timeline(1, 0.040, 0.02, 0.005, 0.0)), source="test"
    )
    report = multirank_report(job_report(job), job, {"nproc_per_node": 2})
    data = json.loads(json.dumps(report.to_dict()))
    assert data["schema"] == "accel.profile/1" and data["mode"] == "multirank"
    assert [r["rank"] for r in data["ranks"]] == [0, 1]
    assert data["ranks"][1]["data_wait_share"] > 0.3
    evidence = next(f for f in data["findings"] if f["kind"] == "straggler")["evidence"]
    assert {"rank", "cause", "arrived_last_share", "wait_share_by_rank"} <= set(evidence)
    assert Report.from_dict(data).extra["ranks"] == data["ranks"]
    out = io.StringIO()
    Console(file=out, width=100, color_system=None).print(rank_table(report))
    assert "1 straggler" in out.getvalue() and "100.0%" in out.getvalue()


# ---- the streaming trace reader ----------------------------------------------------------------


def _trace_text() -> str:
    events = [
        {"ph": "X", "name": f"op{i}", "ts": 1000.5 + i, "dur": 12345678.25, "args": {"s": "[{,}]"}} for i in range(50)
    ]
    return json.dumps({"schemaVersion": 1, "traceEvents": events, "distributedInfo": {"rank": 3}, "n": 123456789})


def test_streaming_reader_matches_json_load_across_chunk_boundaries(monkeypatch):
    text = _trace_text()
    monkeypatch.setattr(traces, "CHUNK_CHARS", 7)  # values and numbers cut at every position
    header: dict = {}
    events = list(traces.read_events(io.StringIO(text), header))
    whole = json.loads(text)
    assert events == whole["traceEvents"]
    assert header == {k: v for k, v in whole.items() if k != "traceEvents"}


def test_reading_a_gzipped_trace_and_bad_folders(tmp_path):
    path = tmp_path / "rank0.1.pt.trace.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as stream:
        stream.write(_trace_text())
    events = traces.RankEvents()
    header = traces.read_rank_file(path, events)
    assert header["distributedInfo"]["rank"] == 3 and events.events == 50
    with pytest.raises(PipelineLoadError, match=r"missing ranks \[0, 1, 2\]"):
        profile_traces(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PipelineLoadError, match="no trace files"):
        profile_traces(empty)
    broken = tmp_path / "b"
    broken.mkdir()
    (broken / "rank0.pt.trace.json").write_text('{"traceEvents": [{"ph": "X", ')
    with pytest.raises(PipelineLoadError, match="not a readable trace"):
        profile_traces(broken)


def test_more_ranks_than_cores_is_a_clear_warning():
    assert launch_module.cores_warning(2, 2) is None
    message = launch_module.cores_warning(4, 2)
    assert "4 ranks on 2 cores" in message and "--nproc-per-node 2" in message


# ---- torchrun, 2 gloo ranks --------------------------------------------------------------------


def _rank_processes(marker: str) -> list[int]:
    """Live processes whose command line names `marker` (the planted script of a test)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture
def no_processes_left():
    """After the test: no process runs a planted multi-rank script (killed if one does, then failed)."""
    yield
    left = [pid for script in PLANTED.glob("mr_*.py") for pid in _rank_processes(str(script))]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    assert left == [], f"processes left running: {left}"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("straggler", "cause"), [("input", "data_loading"), ("compute", "compute_bound"), ("none", None)]
)
def test_planted_straggler_under_torchrun_and_from_its_traces(tmp_path, straggler, cause, no_processes_left):
    trace_out = tmp_path / "cluster-traces"
    args = ("--straggler", straggler, "--steps", STEPS, "--trace-out", str(trace_out))
    args += BALANCED if cause is None else ()
    live = profile_ranks(TRAIN, 2, args=args, timeout_seconds=RUN_TIMEOUT_SECONDS)
    from_traces = profile_traces(trace_out)
    for report in (live, from_traces):
        assert report.mode == "multirank" and len(report.extra["ranks"]) == 2
        finding = report.finding("straggler")
        if cause is None:
            assert finding is None or finding.severity in ("low", "info"), finding.summary
            assert report.primary != "straggler"
        else:
            assert finding.evidence["rank"] == 1 and finding.evidence["cause"] == cause, finding.summary
            assert finding.severity in ("medium", "high") and report.primary == "straggler"
            assert finding.evidence["arrived_last_share"] > 0.5
    assert live.extra["multirank"]["source"] == "torchrun"
    assert from_traces.extra["multirank"]["source"] == "traces"


@pytest.mark.slow
def test_accel_writes_one_trace_per_rank_and_warns_past_the_cores(tmp_path, monkeypatch, no_processes_left):
    monkeypatch.setattr(launch_module, "usable_cores", lambda: 1)
    warnings: list[str] = []
    logdir = tmp_path / "runs" / "train"
    out = tmp_path / "report.json"
    report = profile_ranks(
        TRAIN,
        2,
        args=("--steps", "8"),
        trace_dir=logdir,
        json_path=out,
        warn=warnings.append,
        timeout_seconds=RUN_TIMEOUT_SECONDS,
    )
    assert warnings and "2 ranks on 1 cores" in warnings[0]
    files = sorted(logdir.glob("*.pt.trace.json"))
    assert [f.name.split(".")[0] for f in files] == ["rank0", "rank1"]
    for rank, file in enumerate(files):
        trace = json.loads(file.read_text())  # valid Chrome trace JSON, as Perfetto and HTA read it
        assert trace["distributedInfo"]["rank"] == rank and trace["distributedInfo"]["world_size"] == 2
        assert any(e.get("name", "").startswith("ProfilerStep#") for e in trace["traceEvents"])
    assert json.loads(out.read_text())["ranks"] == report.extra["ranks"]
    from typer.testing import CliRunner

    from accel.cli import app

    page = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["profile", "--traces", str(logdir), "--html", str(page)])
    assert result.exit_code == 0, result.output
    assert "Ranks (2, from traces" in result.output and page.stat().st_size > 0


def _accel(*args: str) -> subprocess.CompletedProcess:
    """The real CLI in its own session; on a timeout its whole process group is killed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "accel", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.slow
def test_a_crashing_rank_is_named_the_others_stopped(no_processes_left):
    result = _accel("profile", "--no-trace", "--nproc-per-node", "2", str(PLANTED / "mr_crash.py"))
    assert result.returncode == 2, result.stderr
    line = " ".join(result.stderr.split())
    assert "rank 1 failed" in line and "RuntimeError: planted crash on rank 1" in line
    assert "Traceback" not in result.stderr
    assert _rank_processes(str(PLANTED / "mr_crash.py")) == []


@pytest.mark.slow
def test_a_script_without_a_process_group_is_bad_input(no_processes_left):
    with pytest.raises(PipelineError, match="never initialized a process group"):
        profile_ranks(PLANTED / "mr_no_init.py", 2, timeout_seconds=RUN_TIMEOUT_SECONDS)


def test_cli_option_errors_are_one_line(tmp_path):
    from typer.testing import CliRunner

    from accel.cli import app

    both = CliRunner().invoke(app, ["profile", "--traces", str(tmp_path), str(TRAIN)])
    assert both.exit_code == 2 and "runs nothing" in both.output
    missing = CliRunner().invoke(app, ["profile", "--traces", str(tmp_path / "absent")])
    assert missing.exit_code == 2 and "no such folder" in missing.output


def test_trace_clocks_are_shifted_per_host_only():
    def events(host_offset: float, lag: float) -> traces.RankEvents:
        ranked = traces.RankEvents()
        for i in range(5):
            start = host_offset + i * 0.1
            ranked.steps.append((start, start + 0.1))
            ranked.calls.setdefault("allreduce", []).append(start + 0.02 + lag)
            ranked.works.setdefault("allreduce", []).append((start + 0.02 + lag, start + 0.06))
        return ranked

    same = JobTimeline((events(0.0, 0.0).timeline(0, "a"), events(0.0, 0.01).timeline(1, "a")), source="traces")
    assert traces.clock_shifts(same) == {0: 0.0, 1: 0.0}
    # Rank 1's host clock runs 5 s ahead: its completions are 5 s later on its clock.
    other = JobTimeline((events(0.0, 0.0).timeline(0, "a"), events(5.0, 0.01).timeline(1, "b")), source="traces")
    assert traces.clock_shifts(other)[1] == pytest.approx(5.0)


def test_the_reader_keeps_a_bounded_buffer_on_a_large_trace(monkeypatch):
    """2 MB of events read 4 KiB at a time: the buffer never holds much more than a chunk."""
    events = [{"ph": "X", "name": "aten::mm", "ts": float(i), "dur": 1.0, "tid": 1} for i in range(30_000)]
    text = json.dumps({"traceEvents": events})
    monkeypatch.setattr(traces, "CHUNK_CHARS", 4096)
    largest = 0
    fill = traces._Reader._fill

    def tracked(reader: traces._Reader) -> bool:
        nonlocal largest
        filled = fill(reader)
        largest = max(largest, len(reader.buffer))
        return filled

    monkeypatch.setattr(traces._Reader, "_fill", tracked)
    count = sum(1 for _ in traces.read_events(io.StringIO(text), {}))
    assert count == len(events) and len(text) > 2_000_000
    assert largest <= 2 * 4096
