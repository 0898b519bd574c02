"""Files accel writes get the user's umask (0644 under the usual 022, never a fixed 0600), and the
writer stays atomic: no temporary file is left beside the output."""

from __future__ import annotations

import os
import stat

import pytest

from accel.core.io import copy_file_atomic, write_json_atomic, write_text_atomic


@pytest.fixture
def umask():
    """Set a umask for the test and put the process's own back after it."""
    saved = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_outputs_follow_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    write_json_atomic(tmp_path / "report.json", {"a": 1})
    write_text_atomic(tmp_path / "report.html", "<p>")
    for name in ("report.json", "report.html"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json"]


def test_a_copy_keeps_its_sources_mode(tmp_path, umask):
    source = tmp_path / "model.onnx"
    source.write_bytes(b"onnx")
    source.chmod(0o640)
    copy_file_atomic(source, tmp_path / "out.onnx")
    assert stat.S_IMODE((tmp_path / "out.onnx").stat().st_mode) == 0o640
