"""Bad input: one clear line naming the problem and the fix, exit code 2, no traceback, no writes.
The cases run the real console script (`accel`, as installed), in a fresh process each."""

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from accel.cli import app
from accel.cli.live import PROGRESS_LINE
from accel.core.errors import AccelError

runner = CliRunner()

MODEL_THAT_RAISES = """import torch
class Broken(torch.nn.Module):
    def forward(self, x):
        raise ValueError("mat1 and mat2 shapes cannot be multiplied")
model = Broken()
example_inputs = (torch.ones(2, 3),)
"""

CASES = {
    "syntax": ("import torch\nmodel = (\n", "syntax error in", "line 2"),
    "import_in_pipeline": (
        "import accel\nimport not_a_module_xyz\npipeline = None\n",
        "failed to import",
        "not_a_module_xyz",
    ),
    "import_in_script": ("import not_a_module_xyz\n", "failed to import", "install the missing module"),
    "no_pipeline": (
        "import torch\nmodel = torch.nn.Linear(2, 2)\n",
        "defines model but not example_inputs",
        "needs both",
    ),
    "model_raises": (MODEL_THAT_RAISES, "model stage raised ValueError", "mat1 and mat2"),
    "model_wrong_type": (
        "import accel\npipeline = accel.Pipeline(model='resnet', inputs=(1,))\n",
        "Pipeline(model=...) must be a torch.nn.Module",
        "pass the model object",
    ),
    "batch_size_wrong_type": (
        "import accel, torch\npipeline = accel.Pipeline(model=torch.nn.Linear(2, 2), "
        "source=[torch.ones(2)], batch_size='8')\n",
        "must be an int, got str",
        "batch_size=1",
    ),
    "pipeline_not_a_pipeline": ("pipeline = 42\n", "not an accel.Pipeline", "accel.Pipeline(model="),
    "one_shot_generator": (
        "import accel, torch\npipeline = accel.Pipeline(model=torch.nn.Linear(2, 2), "
        "source=(torch.ones(2) for _ in range(4)))\n",
        "source is a one-shot generator",
        "fresh pass",
    ),
    "empty_file": ("", "defines no pipeline and runs nothing", "model and example_inputs"),
    "docstring_only": ('"""Nothing here yet."""\n# a comment\n', "defines no pipeline and runs nothing", "pipeline ="),
    "inputs_not_tensors": (
        "import torch\nmodel = torch.nn.Linear(2, 2)\nexample_inputs = [1, 2]\n",
        "must be a tuple of tensors",
        "example_inputs = (",
    ),
}


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


CONSOLE_SCRIPT = Path(sys.executable).with_name("accel")


def run_console(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The installed `accel` console script, as a user runs it."""
    return subprocess.run([str(CONSOLE_SCRIPT), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def assert_one_line_exit_2(result: subprocess.CompletedProcess, *needles: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip() and not PROGRESS_LINE.match(line)]
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert all(needle in lines[0] for needle in needles), (needles, lines[0])
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_pipeline_file_is_one_line_and_exit_2(case, tmp_path):
    source, problem, fix = CASES[case]
    user, work = tmp_path / "user", tmp_path / "work"
    user.mkdir()
    work.mkdir()
    (user / "target.py").write_text(source)
    before = listing(user)
    result = run_console(work, "profile", str(user / "target.py"), "--budget", "1", "--no-trace")
    assert_one_line_exit_2(result, problem, fix)
    assert listing(user) == before, "accel wrote into the user's folder"


def test_unknown_guard_key_in_a_recipe_names_the_valid_ones(tmp_path):
    (tmp_path / "model.py").write_text(
        "import torch\nmodel = torch.nn.Linear(2, 2)\nexample_inputs = (torch.ones(1, 2),)\n"
    )
    (tmp_path / "r.yaml").write_text("name: r\nguard: {min_cosin: 0.9}\nrules: [{name: a, try: [onnx.runtime]}]\n")
    result = run_console(tmp_path, "optimize", "model.py", "--recipe", "r.yaml")
    assert_one_line_exit_2(result, "unknown key 'min_cosin'", "min_top1_agreement", "validation_batches")


def test_a_recipe_that_is_not_utf8_is_one_line(tmp_path):
    (tmp_path / "model.py").write_text(
        "import torch\nmodel = torch.nn.Linear(2, 2)\nexample_inputs = (torch.ones(1, 2),)\n"
    )
    (tmp_path / "r.yaml").write_bytes(b"name: r\n# \xff\xfe latin-1 text\nrules: []\n")
    result = run_console(tmp_path, "optimize", "model.py", "--recipe", "r.yaml")
    assert_one_line_exit_2(result, "r.yaml is not UTF-8 text", "save it as UTF-8")


@pytest.mark.parametrize("text, problem", [(None, "no such lock file"), ("schema: other/1\n", "not an accel lock")])
def test_verify_a_missing_or_foreign_lock(tmp_path, text, problem):
    if text is not None:
        (tmp_path / "accel.lock.yaml").write_text(text)
    result = run_console(tmp_path, "verify", "accel.lock.yaml")
    assert_one_line_exit_2(result, problem)


def test_missing_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["profile", "nowhere.py"])
    assert result.exit_code == 2
    assert "no such file: nowhere.py" in result.output and "check the path" in result.output
    assert listing(tmp_path) == set()


def test_not_a_python_file(tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("hello")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["profile", "notes.txt"])
    assert result.exit_code == 2 and "is not a Python file" in result.output


def test_debug_shows_the_underlying_error(tmp_path, monkeypatch):
    source, _, _ = CASES["model_raises"]
    (tmp_path / "target.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["--debug", "profile", "target.py", "--no-trace", "--budget", "1"])
    assert isinstance(result.exception, AccelError)
    assert isinstance(result.exception.__cause__, ValueError)


def test_bad_flag_is_a_usage_error(tmp_path):
    result = runner.invoke(app, ["profile", str(tmp_path / "x.py"), "--bogus"])
    assert result.exit_code == 2
    assert "--bogus" in result.output


def test_good_run_writes_only_the_trace_dir_in_cwd_and_the_json_asked_for(tmp_path, monkeypatch):
    user = tmp_path / "user"
    user.mkdir()
    (user / "helper.py").write_text("import torch\ndef make():\n    return torch.nn.Linear(4, 2).eval()\n")
    (user / "target.py").write_text(
        "import torch\nfrom helper import make\nmodel = make\nexample_inputs = (torch.ones(2, 4),)\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = runner.invoke(app, ["profile", str(user / "target.py"), "--budget", "1", "--json", "out/report.json"])
    assert result.exit_code == 0, result.output
    assert listing(user) == {"helper.py", "target.py"}
    written = listing(work)
    assert "out/report.json" in written
    assert any(p.startswith("accel-runs/target/") and p.endswith(".pt.trace.json") for p in written)
    assert all(p.startswith(("out", "accel-runs")) for p in written)


def test_subprocess_bad_input_exits_2_with_one_line(tmp_path):
    target = tmp_path / "broken.py"
    target.write_text("def oops(:\n")
    result = subprocess.run(
        [sys.executable, "-m", "accel", "profile", str(target), "--no-trace"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if not PROGRESS_LINE.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error: syntax error in"), result.stderr
    assert "Traceback" not in result.stderr
    assert listing(tmp_path) == {"broken.py"}


@pytest.mark.parametrize("recipe", ["latency", "throughput", "default"])
def test_optimize_when_the_baseline_itself_raises_is_one_line(tmp_path, recipe):
    (tmp_path / "model.py").write_text(MODEL_THAT_RAISES)
    result = run_console(tmp_path, "optimize", "model.py", "--recipe", recipe, "--budget", "20")
    assert_one_line_exit_2(result, "raised", "mat1 and mat2")
