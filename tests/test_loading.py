"""Finding the pipeline in a file: the three forms, script detection, and no writes to the user's folder."""

from pathlib import Path

import pytest

import accel
from accel.core.errors import PipelineLoadError
from accel.core.loading import Script, find_target, is_plain_script


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
    "source, plain",
    [
        ("import torch\nx = 1\ndef main():\n    model = 3\n", True),
        ("import torch\nif True:\n    model = torch.nn.Linear(1, 1)\n", False),
        ("try:\n    from lib import pipeline\nexcept ImportError:\n    pass\n", False),
        ("try:\n    import x\nexcept ImportError:\n    example_inputs = ()\n", False),
        ("from lib import *\n", False),
        ("def pipeline():\n    pass\n", False),
        ("class model:\n    pass\n", False),
        ("for i in range(3):\n    print(i)\n", True),
        ("def broken(:\n", False),
    ],
)
def test_plain_script_detection(tmp_path, source, plain):
    assert is_plain_script(write(tmp_path, "f.py", source)) is plain


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
