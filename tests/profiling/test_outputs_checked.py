"""accel profile flags a model whose output holds no number (None, a string, only NaN) with the
message optimize gives, instead of reporting "no bottleneck"; a model with numbers is profiled."""

from __future__ import annotations

import pytest
import torch

import accel
from accel.core.errors import PipelineError


class Returns(torch.nn.Module):
    def __init__(self, make) -> None:
        super().__init__()
        self.make = make

    def forward(self, x):
        return self.make(x)


@pytest.mark.parametrize(
    "make, said",
    [
        (lambda x: None, "the model returned None"),
        (lambda x: "text", "the model returned a string"),
        (lambda x: x * float("nan"), "the model returned only NaN/inf values"),
    ],
)
@pytest.mark.parametrize("with_source", [False, True])
def test_a_model_without_numbers_is_flagged_by_profile(make, said, with_source):
    if with_source:
        pipeline = accel.Pipeline(model=Returns(make), source=[torch.ones(4)] * 8, batch_size=4)
    else:
        pipeline = accel.Pipeline(model=Returns(make), inputs=(torch.ones(2, 4),))
    with pytest.raises(PipelineError, match=said):
        accel.profile(pipeline, budget_seconds=2)


def test_a_model_with_numbers_is_profiled():
    pipeline = accel.Pipeline(model=torch.nn.Linear(4, 2), inputs=(torch.ones(2, 4),))
    report = accel.profile(pipeline, budget_seconds=2)
    assert report.stages
