"""The bad-input sweep's harness, shared by every sweep file: a Kind (the user's files, the command,
what its one line must say) and check_kind, which runs it through the real console script and checks
one `error:` line, the exit code, no traceback, no process left running, the user's folder unchanged
and nothing left in $TMPDIR or the work folder."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from accel.cli.live import PROGRESS_LINE
from accel.core.watchdog import hang_limit_seconds
from tests.security.test_hangs import MARGIN_SECONDS, processes_naming

CONSOLE_SCRIPT = Path(sys.executable).with_name("accel")
LINEAR = "import torch\nmodel = torch.nn.Linear(4, 2).eval()\nexample_inputs = (torch.ones(2, 4),)\n"
# A hang under `accel bench --budget HANG_BUDGET` ends within the watchdog's limit plus a worker's start.
HANG_BUDGET = 5.0
HANG_WITHIN_SECONDS = hang_limit_seconds(HANG_BUDGET) + MARGIN_SECONDS


@dataclasses.dataclass(frozen=True)
class Kind:
    """One kind of bad input: the files in the user's folder, the command ({user}: that folder, run
    from an empty work folder), what the one line must say and must not."""

    args: tuple[str, ...]
    needles: tuple[str, ...]
    files: dict[str, str | bytes] = dataclasses.field(default_factory=lambda: {"pipe.py": LINEAR})
    setup: Callable[[Path], None] | None = None
    absent: tuple[str, ...] = ()
    hangs: bool = False  # the stack of the hung call is printed too (not a traceback), within a bound
    rows_before: bool = False  # the search's rows decided before the error are printed as they were
    env: dict[str, str] = dataclasses.field(default_factory=dict)  # extra variables ({user} formatted)
    read_only: tuple[str, ...] = ()  # folders in the user's folder that cannot be written to
    cwd: str = ""  # the folder the command runs from ({user} formatted); the empty work folder if ""
    code: int = 2  # the exit code: 2 (bad input) unless the kind says why another is right


def error_lines(stderr: str, kind: Kind) -> list[str]:
    """stderr less the progress lines, less the hung call's stack where one is expected, and less
    the rows of the candidates decided before the error, where the search had begun."""
    lines = [line for line in stderr.splitlines() if line.strip() and not PROGRESS_LINE.match(line)]
    if kind.hangs:
        lines = [line for line in lines if not line.startswith((" ", "stack of the hung "))]
    if kind.rows_before:
        lines = lines[next((i for i, line in enumerate(lines) if line.startswith("error:")), 0) :]
    return lines


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


def processes_in(folder: Path) -> list[int]:
    """Live processes started from, or naming, a path inside `folder`."""
    found = set(processes_naming(str(folder)))
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if Path(os.readlink(entry / "cwd")).is_relative_to(folder) and int(entry.name) != os.getpid():
                found.add(int(entry.name))
        except (OSError, ValueError):
            continue
    return sorted(found)


def _set_read_only(folder: Path, read_only: bool) -> None:
    """chmod, and for root (whom modes do not stop) the immutable attribute, set last and cleared first."""
    if not read_only:
        _chattr(folder, "-i")
    folder.chmod(0o555 if read_only else 0o755)
    if read_only and os.geteuid() == 0 and not _chattr(folder, "+i"):
        folder.chmod(0o755)
        pytest.skip("root ignores folder modes and chattr +i is not available here")


def _chattr(folder: Path, flag: str) -> bool:
    chattr = shutil.which("chattr")
    return os.geteuid() == 0 and chattr is not None and subprocess.run([chattr, flag, str(folder)]).returncode == 0


def run_kind(tmp_path: Path, kind: Kind) -> tuple[subprocess.CompletedProcess, float]:
    user, work, temp = tmp_path / "user", tmp_path / "work", tmp_path / "tmp"
    for folder in (user, work, temp):
        folder.mkdir()
    for file, content in kind.files.items():
        (user / file).parent.mkdir(parents=True, exist_ok=True)
        (user / file).write_bytes(content if isinstance(content, bytes) else content.encode())
    if kind.setup is not None:
        kind.setup(user)
    env = {**os.environ, "TMPDIR": str(temp), "COLUMNS": "400"}
    env.update({name: value.format(user=user) for name, value in kind.env.items()})
    began = time.monotonic()
    try:
        for folder in kind.read_only:
            _set_read_only(user / folder, True)
        done = subprocess.run(
            [str(CONSOLE_SCRIPT), *(a.format(user=user) for a in kind.args)],
            cwd=kind.cwd.format(user=user) or work,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    finally:
        for folder in kind.read_only:
            _set_read_only(user / folder, False)
    return done, time.monotonic() - began


def check_kind(tmp_path: Path, kind: Kind) -> None:
    """Run `kind` through the console script; assert one `error:` line and exit kind.code, no
    traceback, no process left, the user's folder unchanged, $TMPDIR and the work folder clean."""
    user, work, temp = tmp_path / "user", tmp_path / "work", tmp_path / "tmp"
    before: dict[str, bytes | None] = {}

    def setup(folder: Path) -> None:
        if kind.setup is not None:
            kind.setup(folder)
        before.update(snapshot(folder))

    done, elapsed = run_kind(tmp_path, dataclasses.replace(kind, setup=setup))
    lines = error_lines(done.stderr, kind)
    assert done.returncode == kind.code, done.stdout + done.stderr
    if kind.hangs:
        assert elapsed < HANG_WITHIN_SECONDS, f"the hang was ended after {elapsed:.0f} s"
        assert "stack of the hung " in done.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    assert all(needle in lines[0] for needle in kind.needles), (kind.needles, lines[0])
    assert not any(word in lines[0] for word in kind.absent), lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert processes_in(tmp_path) == []
    assert snapshot(user) == before, "accel changed the user's folder"
    assert [p.name for p in temp.iterdir()] == [], "accel (or a library it drives) left temporary files"
    assert {p.name for p in work.iterdir()} <= {"accel-runs"}
