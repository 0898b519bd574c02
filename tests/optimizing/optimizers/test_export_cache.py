"""One export per model per search (accel.optimizing.optimizers._export_cache): the same model
exported the same way again is a copy of the first file; a weight changed in place, another
opset or another model is exported afresh."""

from __future__ import annotations

import torch

import accel
from accel.optimizing.optimizers import _export_cache
from accel.optimizing.optimizers._onnx_export import export_onnx


def _pipeline(model: torch.nn.Module) -> accel.Pipeline:
    return accel.Pipeline(model=model, inputs=(torch.randn(2, 8),))


def _exported(monkeypatch) -> list[str]:
    """The paths torch.onnx.export really wrote to."""
    calls: list[str] = []
    real = torch.onnx.export

    def export(*args, **kwargs):
        calls.append(str(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", export)
    return calls


def test_the_same_model_exported_again_is_a_copy_and_a_changed_one_is_exported_afresh(tmp_path, monkeypatch):
    calls = _exported(monkeypatch)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    pipeline = _pipeline(model)
    first = export_onnx(pipeline, tmp_path / "a.onnx", opset=17, requested="torchscript")
    second = export_onnx(pipeline, tmp_path / "b.onnx", opset=17, requested="torchscript")
    assert len(calls) == 1 and first == second
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    # another opset: another graph
    export_onnx(pipeline, tmp_path / "c.onnx", opset=18, requested="torchscript")
    assert len(calls) == 2
    # a weight changed in place: the old file no longer describes the model
    with torch.no_grad():
        model[0].weight.mul_(2.0)
    export_onnx(pipeline, tmp_path / "d.onnx", opset=17, requested="torchscript")
    assert len(calls) == 3 and (tmp_path / "d.onnx").read_bytes() != (tmp_path / "a.onnx").read_bytes()
    # another model of the same shape
    other = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    export_onnx(_pipeline(other), tmp_path / "e.onnx", opset=17, requested="torchscript")
    assert len(calls) == 4


def test_a_kept_export_whose_file_is_gone_is_exported_again(tmp_path, monkeypatch):
    calls = _exported(monkeypatch)
    model = torch.nn.Linear(8, 4).eval()
    export_onnx(_pipeline(model), tmp_path / "a.onnx", opset=17, requested="torchscript")
    for kept in (tmp_path / _export_cache.KEPT_FOLDER).iterdir():
        kept.unlink()
    export_onnx(_pipeline(model), tmp_path / "b.onnx", opset=17, requested="torchscript")
    assert len(calls) == 2
    assert len(_export_cache._kept) <= _export_cache.MAX_KEPT
