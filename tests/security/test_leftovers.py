"""Nothing is left running or lying around: the children a user's script starts end with each run
(`accel profile` and `accel optimize` of the script), a daemon it double-forks (reparented to accel, a
child subreaper while the script runs) included, SIGTERM to a two-rank `accel profile` ends
torchrun and both ranks, and a gate killed mid-run removes its git worktree and temporary checkout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.security.test_hangs import processes_naming

CONSOLE_SCRIPT = Path(sys.executable).with_name("accel")
# A training script that starts long-lived children (one in a session of its own) and leaves them.
# (GNU sleep refuses an extra argument and exits at once: the sleeper is Python, its marker in argv.)
SPAWNING_SCRIPT = textwrap.dedent("""
    import subprocess, sys, torch
    from torch.utils.data import DataLoader
    SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)", "{marker}"]
    for _ in range(3):
        subprocess.Popen(SLEEPER)
    subprocess.Popen(SLEEPER, start_new_session=True)
    for batch in DataLoader(torch.randn(256, 8), batch_size=8):
        torch.nn.functional.relu(batch @ torch.randn(8, 8))
""")
# A script that starts a daemon the classic way: a shell backgrounds a sleeper in a session of its
# own and exits at once, so the sleeper's parent is gone (init, or the nearest subreaper, adopts it).
DOUBLE_FORKING_SCRIPT = textwrap.dedent("""
    import shlex, subprocess, sys, torch
    from torch.utils.data import DataLoader
    sleeper = shlex.join([sys.executable, "-c", "import time; time.sleep(600)", "{marker}"])
    subprocess.run(
        ["sh", "-c", sleeper + " >/dev/null 2>&1 </dev/null & echo $! >> {pids}"],
        start_new_session=True,
        check=True,
    )
    for batch in DataLoader(torch.randn(256, 8), batch_size=8):
        torch.nn.functional.relu(batch @ torch.randn(8, 8))
""")
# Two gloo ranks that say they are up, then step slowly for a long time.
SLOW_RANKS = textwrap.dedent("""
    import os, time, torch, torch.distributed as dist
    from torch.utils.data import DataLoader
    dist.init_process_group("gloo")
    open(os.path.join(os.environ["READY_DIR"], f"rank{dist.get_rank()}"), "w").write(str(os.getpid()))
    for batch in DataLoader(list(range(10**6)), batch_size=2):
        time.sleep(0.5)
        dist.barrier()
""")
SLOW_MODEL = textwrap.dedent("""
    import time, torch
    class Slow(torch.nn.Module):
        def forward(self, x):
            time.sleep(0.05)
            return x * 2
    model = Slow()
    example_inputs = (torch.ones(2, 4),)
""")


def run_accel(cwd: Path, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([str(CONSOLE_SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def kill_all(marker: str) -> None:
    for pid in processes_naming(marker):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("command", [["profile", "--budget", "5", "--no-trace"], ["optimize", "--budget", "15"]])
def test_children_a_script_starts_are_ended_after_each_run(tmp_path, command):
    marker = f"accel-left-{os.getpid()}-{time.monotonic_ns()}"
    (tmp_path / "train.py").write_text(SPAWNING_SCRIPT.format(marker=marker))
    try:
        done = run_accel(tmp_path, command[0], "train.py", *command[1:])
        assert done.returncode in (0, 1), done.stderr[-2000:]
        assert "Traceback" not in done.stderr
        assert processes_naming(marker) == []
    finally:
        kill_all(marker)


@pytest.mark.slow
@pytest.mark.parametrize("command", [["profile", "--budget", "5", "--no-trace"], ["optimize", "--budget", "15"]])
def test_a_daemon_the_script_double_forks_is_ended_after_each_run(tmp_path, command):
    marker = f"accel-daemon-{os.getpid()}-{time.monotonic_ns()}"
    pids = tmp_path / "daemon.pids"
    (tmp_path / "train.py").write_text(DOUBLE_FORKING_SCRIPT.format(marker=marker, pids=pids))
    try:
        done = run_accel(tmp_path, command[0], "train.py", *command[1:])
        assert done.returncode in (0, 1), done.stderr[-2000:]
        started = [int(line) for line in pids.read_text().split()]
        assert started, "the script started no daemon"
        assert processes_naming(marker) == []
        assert all(not Path(f"/proc/{pid}").exists() for pid in started)
    finally:
        kill_all(marker)


@pytest.mark.slow
def test_sigterm_to_a_two_rank_profile_ends_torchrun_and_both_ranks(tmp_path):
    script = tmp_path / "slow_ranks.py"
    script.write_text(SLOW_RANKS)
    ready = tmp_path / "ready"
    ready.mkdir()
    process = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "profile", "--no-trace", "--nproc-per-node", "2", str(script)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "READY_DIR": str(ready)},
    )
    try:
        assert wait_for(lambda: len(list(ready.iterdir())) == 2, 180), "the ranks never started"
        ranks = [int(p.read_text()) for p in ready.iterdir()]
        assert len(processes_naming(str(script))) >= 3  # torchrun and both ranks
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 130, err
        assert "interrupted: stopped by SIGTERM" in err
        assert wait_for(lambda: processes_naming(str(script)) == [], 10), processes_naming(str(script))
        assert all(not Path(f"/proc/{pid}").exists() for pid in ranks)
    finally:
        process.kill()
        kill_all(str(script))


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


@pytest.mark.slow
def test_a_gate_killed_mid_run_removes_its_worktree_and_temporary_checkout(tmp_path):
    repo, temp = tmp_path / "repo", tmp_path / "tmp"
    repo.mkdir()
    temp.mkdir()
    (repo / "model.py").write_text(SLOW_MODEL)
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "add", "model.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "model")
    process = subprocess.Popen(
        [str(CONSOLE_SCRIPT), "gate", "model.py", "--against", "HEAD", "--budget", "120"],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    try:
        assert wait_for(lambda: len(_git(repo, "worktree", "list").splitlines()) == 2, 120), "no worktree"
        time.sleep(3)  # into the measuring
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=90)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert len(_git(repo, "worktree", "list").splitlines()) == 1
    assert [p.name for p in temp.iterdir() if p.name.startswith("accel-gate-")] == []


@pytest.mark.parametrize("link_written", [True, False], ids=["added", "half-added"])
def test_a_signal_while_git_adds_the_gate_worktree_leaves_no_worktree(tmp_path, monkeypatch, link_written):
    """A Ctrl-C/SIGTERM landing as `git worktree add` returns (or before it wrote the worktree's .git
    link, which `git worktree remove` then refuses): the registration and the checkout both go."""
    from accel.gating import against

    repo, temp = tmp_path / "repo", tmp_path / "tmp"
    repo.mkdir()
    temp.mkdir()
    (repo / "model.py").write_text(SLOW_MODEL)
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "add", "model.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "model")
    git = against._git

    def interrupted_add(args: list[str], cwd: Path) -> str:
        out = git(args, cwd)
        if args[:2] == ["worktree", "add"]:
            if not link_written:
                (Path(args[-2]) / ".git").unlink()
            raise KeyboardInterrupt
        return out

    monkeypatch.setattr(against, "_git", interrupted_add)
    monkeypatch.setattr(against.tempfile, "tempdir", str(temp))
    with pytest.raises(KeyboardInterrupt):
        with against.worktree_at(repo / "model.py", "HEAD"):
            pass
    assert _git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert list(temp.iterdir()) == []
