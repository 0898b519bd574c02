"""Lock messages that must not contradict themselves: an empty lock is not 'still paying', and a lock
written for another file says so rather than that the file 'changed since'."""

from __future__ import annotations

import shutil

import pytest
from typer.testing import CliRunner

import accel
from accel.cli import app
from accel.core.errors import LockError
from accel.optimizing.lock import Lock, file_sha256, write_lock
from tests.paths import PLANTED


def _empty_lock(tmp_path):
    file = tmp_path / "dead.py"
    shutil.copy(PLANTED / "opt_dead_work.py", file)
    lock = Lock(
        pipeline_file=file.name,
        pipeline_sha256=file_sha256(file),
        pipeline_path=str(file),
        target="latency",
        min_speedup=1.03,
    )
    return file, write_lock(tmp_path / "out", lock)


def test_an_empty_lock_says_nothing_to_verify_and_never_that_it_still_pays(tmp_path):
    _, lock = _empty_lock(tmp_path)
    result = CliRunner().invoke(app, ["verify", str(lock), "--budget", "2"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "nothing to verify" in text and "nothing was timed" in text
    assert "still pays" not in text


def test_another_files_lock_names_the_file_it_was_written_for(tmp_path):
    _, lock = _empty_lock(tmp_path)
    other = tmp_path / "wide_mlp.py"
    shutil.copy(PLANTED / "opt_wide_mlp.py", other)
    with pytest.raises(LockError) as info:
        accel.load(other, lock=lock)
    assert info.value.message.endswith("is a lock for dead.py, not wide_mlp.py"), info.value.message
    assert "changed since" not in info.value.message
    assert "accel optimize wide_mlp.py" in info.value.hint


def test_the_same_file_edited_still_says_changed_since(tmp_path):
    file, lock = _empty_lock(tmp_path)
    file.write_text(file.read_text() + "\n# edited\n")
    with pytest.raises(LockError, match="dead.py changed since"):
        accel.load(file, lock=lock)
