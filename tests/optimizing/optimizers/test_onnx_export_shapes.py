"""Exports checked on the pipeline's batches of other shapes: a model whose Python loop follows its
input's length (a stepwise char-RNN) is traced once, at the example's length, so its ONNX and
OpenVINO graphs are wrong on every other length. The optimizers say "not applicable" with that
reason instead of failing inside ONNX Runtime ("Gather ... indices element out of data bounds")
or being reverted by the guard; a model without such a loop exports and keeps its dynamic axes."""

from __future__ import annotations

import pytest
import torch

import accel
from accel.core.machine import describe_machine
from accel.optimizing.optimizers import OPTIMIZERS, Context, NotApplicable
from accel.optimizing.optimizers._onnx_export import (
    check_export,
    fixed_shape_text,
    other_shaped_batches,
    output_mismatch,
)
from tests.paths import REAL

pytest.importorskip("onnxruntime")

RNN = REAL / "char_rnn_stepwise.py"


def _context(tmp_path):
    return Context(machine=describe_machine(), workdir=tmp_path)


class MeanPool(torch.nn.Module):
    """No loop: an embedding averaged over the sequence, whatever its length."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(30, 8)
        self.out = torch.nn.Linear(8, 4)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        return self.out(self.embed(chars).mean(dim=1))


def _mean_pool_pipeline() -> accel.Pipeline:
    torch.manual_seed(0)
    names = [[1 + (i * 7 + j) % 26 for j in range(3 + i % 6)] for i in range(12)]
    return accel.Pipeline(model=MeanPool().eval(), source=names, transform=torch.tensor, batch_size=1)


def test_output_mismatch_names_what_differs():
    same = torch.tensor([[1.0, -2.0]])
    assert output_mismatch(same, same + 1e-6) is None
    assert "shape (1, 3)" in output_mismatch(same, torch.zeros(1, 3))
    assert "differs from the model's by 50%" in output_mismatch(same, torch.tensor([[1.0, -1.0]]))
    assert "2 tensors" in output_mismatch(same, (same, same))


def test_fixed_shape_names_the_length_axis_before_the_batch_axis():
    assert fixed_shape_text(torch.zeros(1, 9), torch.zeros(1, 4)) == "length 9"
    assert fixed_shape_text(torch.zeros(8, 9), torch.zeros(4, 5)) == "length 9"
    assert fixed_shape_text(torch.zeros(8, 9), torch.zeros(4, 9)) == "batch size 8"


def test_a_stepwise_rnn_export_is_not_applicable_with_the_reason(tmp_path):
    pipeline = accel.load(RNN)
    assert other_shaped_batches(pipeline), "the corpus pipeline must hold names of several lengths"
    example_length = pipeline.example_batch().shape[1]
    for name in ("onnx.runtime", "onnx.int8_dynamic"):
        optimizer = OPTIMIZERS.get(name)
        assert optimizer.applicable(pipeline, _context(tmp_path)) is None  # only the export shows it
        with pytest.raises(NotApplicable, match=f"data-dependent loop at length {example_length}: on a batch"):
            optimizer.apply(pipeline, optimizer.Config(), _context(tmp_path / name))


@pytest.mark.slow
def test_a_stepwise_rnn_conversion_to_openvino_is_not_applicable(tmp_path):
    pytest.importorskip("openvino")
    pipeline = accel.load(RNN)
    optimizer = OPTIMIZERS.get("openvino.runtime")
    with pytest.raises(NotApplicable, match="data-dependent loop at length"):
        optimizer.apply(pipeline, optimizer.Config(), _context(tmp_path))
    assert not list(tmp_path.glob("*-shapes.*")), "the scratch IR of the check is removed"


def test_a_model_without_a_loop_exports_and_agrees_on_every_length(tmp_path):
    pipeline = _mean_pool_pipeline()
    optimizer = OPTIMIZERS.get("onnx.runtime")
    applied = optimizer.apply(pipeline, optimizer.Config(), _context(tmp_path))
    for batch in other_shaped_batches(pipeline, limit=4):
        assert output_mismatch(pipeline.call_model(batch), applied.pipeline.call_model(batch)) is None


def test_the_check_raises_for_a_runtime_that_breaks_on_other_shapes():
    pipeline = _mean_pool_pipeline()
    length = pipeline.example_batch().shape[1]

    class FixedLength(torch.nn.Module):
        """A stand-in for a graph traced at one length: it refuses any other."""

        def forward(self, chars: torch.Tensor) -> torch.Tensor:
            if chars.shape[1] != length:
                raise RuntimeError("Gather node: indices element out of data bounds")
            return pipeline.model(chars)

    with pytest.raises(NotApplicable, match=f"at length {length}: .* the runtime raised RuntimeError: Gather"):
        check_export(pipeline, FixedLength)
    check_export(pipeline, lambda: pipeline.model)  # the model itself agrees with itself
    fixed = pipeline.replace(source=[[1, 2, 3]] * 4)
    check_export(fixed, lambda: pytest.fail("nothing is built when every batch has the example's shape"))
