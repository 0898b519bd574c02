"""A wheel user's way in (issue 25 point 7): the wheel ships the examples as package data,
`accel demo` profiles the bundled image pipeline into ./accel-runs/, `accel demo --list` names the
examples and `accel examples DEST` copies them out without ever overwriting a file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from accel.cli import app
from tests.paths import EXAMPLES, ROOT

CONSOLE_SCRIPT = Path(sys.executable).with_name("accel")
# What a source checkout holds that a build must not read or write into.
NOT_SOURCE = (".git", ".venv", "accel-runs", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache", "tests")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the source tree (the checkout gets no build/ folder)."""
    folder = tmp_path_factory.mktemp("wheel")
    source = folder / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            str(source),
            "-w",
            str(folder),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = folder.glob("accel-*.whl")
    return built


@pytest.mark.slow
def test_the_wheel_ships_every_example_and_the_project_urls(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    shipped = {Path(n).name for n in names if n.startswith("accel/examples/")}
    assert shipped == {p.name for p in EXAMPLES.glob("*.py")}, shipped
    assert "Project-URL: Source, https://" in metadata and "Project-URL: Documentation, https://" in metadata


@pytest.mark.slow
def test_the_wheel_alone_lists_and_copies_its_own_examples(wheel, tmp_path):
    installed = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(installed)
    code = "import sys; from accel.cli import main; sys.argv = ['accel', *sys.argv[1:]]; main()"
    env = {"PYTHONPATH": str(installed), "PATH": "/usr/bin:/bin", "ACCEL_CACHE_DIR": str(tmp_path / "cache")}
    listed = subprocess.run(
        [sys.executable, "-c", code, "demo", "--list"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert listed.returncode == 0 and "image_pipeline.py" in listed.stdout, listed.stdout + listed.stderr
    copied = subprocess.run(
        [sys.executable, "-c", code, "examples", "mine"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert copied.returncode == 0, copied.stderr
    assert (tmp_path / "mine" / "image_pipeline.py").read_bytes() == (EXAMPLES / "image_pipeline.py").read_bytes()
    where = subprocess.run(
        [sys.executable, "-c", "import accel.core.examples as e; print(e.examples_folder())"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert where.stdout.strip() == str(installed / "accel" / "examples"), where.stdout + where.stderr


@pytest.mark.slow
def test_accel_demo_through_the_console_script_writes_its_report_under_accel_runs(tmp_path):
    done = subprocess.run(
        [str(CONSOLE_SCRIPT), "demo", "--budget", "2"], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "accel-runs" / "image_pipeline"
    report = json.loads((out / "profile.json").read_text())
    assert report["schema"] == "accel.profile/1" and report["target"] == "image_pipeline"
    assert (out / "report.html").is_file() and list(out.glob("*.pt.trace.json"))
    assert "Traceback" not in done.stderr


def test_accel_examples_copies_once_and_never_overwrites(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["examples", str(tmp_path / "ex")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "ex").iterdir()) == sorted(p.name for p in EXAMPLES.glob("*.py"))
    edited = tmp_path / "ex" / "wide_mlp.py"
    edited.write_text("# my edits\n")
    again = runner.invoke(app, ["examples", str(tmp_path / "ex")])
    assert again.exit_code == 2 and "never overwrites" in again.output and "Traceback" not in again.output
    assert edited.read_text() == "# my edits\n"
