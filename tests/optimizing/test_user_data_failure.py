"""A candidate's trial that fails inside the pipeline's own data code (source, decode, transform,
collate) is the pipeline's error, told apart from a candidate that breaks on its own: the frame of
the user's code on the traceback, or its name in a DataLoader worker's re-raised traceback."""

from __future__ import annotations

import pytest
import torch

import accel
from accel.core.errors import PipelineError
from accel.optimizing.search.validation import refuse_user_data_failure, user_stage_raised


def decode(index: int) -> torch.Tensor:
    if index == 57:
        raise ValueError("sample 57 is corrupt")
    return torch.ones(4)


def corrupt_at_57(**options) -> accel.Pipeline:
    return accel.Pipeline(model=torch.nn.Linear(4, 2), source=list(range(64)), decode=decode, batch_size=4, **options)


def raised_by(fn) -> Exception:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the test inspects what was raised
        return exc
    raise AssertionError("expected an error")


def test_a_decode_error_met_while_reading_the_source_is_the_decodes():
    pipeline = corrupt_at_57()
    exc = raised_by(lambda: list(pipeline.iter_batches(num_workers=0)))
    assert user_stage_raised(exc, pipeline) == "decode"
    with pytest.raises(PipelineError, match="the pipeline's decode raised while onnx.runtime ran over the source"):
        refuse_user_data_failure(exc, pipeline, "onnx.runtime", "onnx.runtime")
    refuse_user_data_failure(exc, pipeline, "decode.reduced", "data.decode")  # it changed what decode ran on


def test_a_decode_error_from_a_dataloader_worker_is_the_decodes():
    pipeline = corrupt_at_57()
    exc = raised_by(lambda: list(pipeline.iter_batches(num_workers=1)))
    assert user_stage_raised(exc, pipeline) == "decode"


def test_a_wrapped_decode_error_is_the_decodes():
    pipeline = corrupt_at_57()

    def calibrate() -> None:
        try:
            list(pipeline.iter_batches(num_workers=0))
        except ValueError as exc:
            raise RuntimeError("calibration failed") from exc

    assert user_stage_raised(raised_by(calibrate), pipeline) == "decode"


def test_a_candidate_that_breaks_on_its_own_is_not_the_pipelines_error():
    pipeline = corrupt_at_57()

    def candidate_forward() -> None:
        raise ValueError("sample 57 is corrupt")  # the same words, from the candidate's code

    exc = raised_by(candidate_forward)
    assert user_stage_raised(exc, pipeline) is None
    refuse_user_data_failure(exc, pipeline, "onnx.runtime", "onnx.runtime")  # no error: the engine records it as failed
    model_error = raised_by(lambda: pipeline.forward(torch.ones(2, 3)))  # the model, not a data stage
    assert user_stage_raised(model_error, pipeline) is None
