"""Finding the pipeline in a file: the three forms, script detection, and no writes to the user's folder."""

from pathlib import Path

import pytest

import accel
from accel.core.errors import PipelineLoadError
from accel.core.loading import Script, declared_form, find_target, is_plain_script


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_pipeline_object_or_factory(tmp_path):
    body = "import torch, accel\n{}\n"
    obj = write(
        tmp_path,
        "obj.py",
        body.format("pipeline = accel.Pipeline(model=torch.nn.Linear(2, 2), inputs=(torch.ones(1, 2),))"),
    )
    factory = write(
        tmp_path,
        "factory.py",
        body.format(
            "def pipeline():\n    return accel.Pipeline(model=torch.nn.Linear(2, 2), inputs=(torch.ones(1, 2),))"
        ),
    )
    for path in (obj, factory):
        loaded = accel.load(path)
        assert isinstance(loaded, accel.Pipeline)
        assert loaded.name == path.stem


def test_minimal_form_with_callables_and_a_single_tensor(tmp_path):
    path = write(
        tmp_path,
        "minimal.py",
        "import torch\ndef model():\n    return torch.nn.Linear(3, 1)\nexample_inputs = torch.ones(4, 3)\n",
    )
    pipeline = accel.load(path)
    assert isinstance(pipeline.inputs, tuple) and pipeline.inputs[0].shape == (4, 3)
    assert not pipeline.model.training
    (output,) = pipeline.run()
    assert output.shape == (4, 1)


def test_a_plain_script_is_a_script_and_load_says_so(tmp_path):
    path = write(tmp_path, "train.py", "import torch\nif __name__ == '__main__':\n    raise SystemExit(1)\n")
    assert find_target(path, ("--epochs", "1")) == Script(path=path, args=("--epochs", "1"))
    with pytest.raises(PipelineLoadError, match="defines no 'pipeline'") as info:
        accel.load(path)
    assert "accel profile can still run it as a script" in info.value.hint


@pytest.mark.parametrize(
    "source, form",
    [
        ("import torch\nx = 1\ndef main():\n    model = 3\n", "script"),
        ("import torch\nif True:\n    model = torch.nn.Linear(1, 1)\n", "script"),  # model alone: a script
        ("try:\n    from lib import pipeline\nexcept ImportError:\n    pass\n", "pipeline"),
        ("try:\n    import x\nexcept ImportError:\n    example_inputs = ()\n", "script"),
        ("from lib import *\n", "unknown"),
        ("def pipeline():\n    pass\n", "pipeline"),
        ("class model:\n    pass\nexample_inputs = ()\n", "minimal"),
        ("for i in range(3):\n    print(i)\n", "script"),
        ("def broken(:\n", "unknown"),
    ],
)
def test_form_is_read_from_the_syntax_tree(tmp_path, source, form):
    path = write(tmp_path, "f.py", source)
    assert declared_form(path) == form
    assert is_plain_script(path) is (form == "script")


# A training script as people write them: a global model and the loop at top level, no __main__
# guard. Each run appends a line to the file named by its first argument.
TRAINING_SCRIPT = """import sys
import torch
from torch.utils.data import DataLoader, TensorDataset
{extra}
with open(sys.argv[1], "a") as log:
    log.write("ran\\n")
model = torch.nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for x, y in DataLoader(TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,))), batch_size=8):
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
"""


def test_training_script_with_a_global_model_runs_once_as_a_script(tmp_path, monkeypatch):
    import accel.core.loading as loading

    def no_import(file):
        raise AssertionError(f"{file} was imported")

    monkeypatch.setattr(loading, "import_file", no_import)
    path = write(tmp_path, "train.py", TRAINING_SCRIPT.format(extra=""))
    runs = tmp_path / "runs.log"
    target = find_target(path, (str(runs),))
    assert isinstance(target, Script) and target.incomplete_form == "defines model but not example_inputs"
    assert "run once as a script" in target.note
    report = accel.profile(path, args=(str(runs),), budget_seconds=30.0)
    assert report.mode == "script" and report.extra["end_to_end"]["samples"] == 32
    assert runs.read_text().splitlines() == ["ran"]
    assert report.extra["notes"] == [target.note]
    # accel.load refuses it with the reason, and without running it
    with pytest.raises(PipelineLoadError, match="defines model but not example_inputs") as info:
        accel.load(path)
    assert "needs both" in info.value.hint and runs.read_text().splitlines() == ["ran"]


def test_a_file_that_had_to_be_imported_says_it_ran_twice(tmp_path):
    write(tmp_path, "helpers.py", "import torch\n")
    path = write(tmp_path, "train.py", TRAINING_SCRIPT.format(extra="from helpers import *"))
    runs = tmp_path / "runs.log"
    report = accel.profile(path, args=(str(runs),), budget_seconds=30.0)
    assert report.mode == "script"
    assert runs.read_text().splitlines() == ["ran", "ran"]
    (note,) = report.extra["notes"]
    assert "its top-level code ran once" in note and "running it again" in note


def test_rendered_profile_shows_the_note(tmp_path):
    from io import StringIO

    from rich.console import Console

    from accel.cli.render_profile import render_profile

    path = write(tmp_path, "train.py", TRAINING_SCRIPT.format(extra=""))
    report = accel.profile(path, args=(str(tmp_path / "runs.log"),), budget_seconds=30.0)
    out = StringIO()
    render_profile(report, Console(file=out, width=100, color_system=None))
    assert "note: train.py defines model but not example_inputs: run once as a script" in out.getvalue()


def test_importing_a_pipeline_file_writes_nothing_next_to_it(tmp_path):
    write(tmp_path, "helper.py", "import torch\ndef make():\n    return torch.nn.Linear(2, 2)\n")
    path = write(
        tmp_path,
        "target.py",
        "import torch\nfrom helper import make\nmodel = make()\nexample_inputs = (torch.ones(1, 2),)\n",
    )
    accel.load(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["helper.py", "target.py"]


def test_a_folder_or_onnx_is_not_a_pipeline_file(tmp_path):
    with pytest.raises(PipelineLoadError, match="is a folder"):
        find_target(tmp_path)
    onnx = write(tmp_path, "m.onnx", "")
    with pytest.raises(PipelineLoadError, match="ONNX model"):
        find_target(onnx)


def test_same_named_helpers_in_two_folders_do_not_shadow_each_other(tmp_path):
    outputs = []
    for width in (2, 5):
        folder = tmp_path / f"project{width}"
        folder.mkdir()
        write(folder, "helper.py", f"WIDTH = {width}\n")
        path = write(
            folder,
            "target.py",
            "import torch\nfrom helper import WIDTH\nmodel = torch.nn.Identity()\n"
            "example_inputs = (torch.ones(1, WIDTH),)\n",
        )
        outputs.append(accel.load(path).inputs[0].shape[1])
    assert outputs == [2, 5]
