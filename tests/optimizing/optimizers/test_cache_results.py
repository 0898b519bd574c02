"""cache.results: repeated inputs skip the model; refusals for training mode and randomness."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import accel
from accel.core.machine import describe_machine
from accel.optimizing.optimizers import OPTIMIZERS, Context
from accel.optimizing.optimizers.cache_results import ResultCache
from tests.paths import PLANTED

OPT = OPTIMIZERS.get("cache.results")


@pytest.fixture
def context(tmp_path):
    return Context(machine=describe_machine(), workdir=tmp_path)


class CountingModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.samples_seen = 0

    def forward(self, x):
        self.samples_seen += x.shape[0]
        return self.linear(x)


def test_repeats_skip_the_model_and_results_match():
    torch.manual_seed(0)
    distinct = [torch.randn(4) for _ in range(3)]
    model = CountingModel().eval()
    pipeline = accel.Pipeline(model=model, source=[distinct[i % 3] for i in range(12)], batch_size=4)
    reference = pipeline.run()
    model.samples_seen = 0
    cached = pipeline.replace(forward_wrapper=ResultCache(1 << 20))
    results = cached.run()
    assert model.samples_seen == 3
    assert cached.forward_wrapper.hits == 9 and cached.forward_wrapper.hit_rate == pytest.approx(0.75)
    for a, b in zip(reference, results):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_lru_bound_in_bytes():
    cache = ResultCache(max_bytes=2 * 3 * 4)  # room for two outputs of 3 floats
    model = nn.Linear(4, 3).eval()
    inputs = torch.eye(4)
    with torch.inference_mode():
        for row in range(4):
            cache(inputs[row : row + 1], model)
    assert len(cache.entries) == 2 and cache.bytes_held <= cache.max_bytes


def test_planted_stream_is_several_times_faster(context):
    pipeline = accel.load(PLANTED / "dp_repeats.py")
    assert OPT.applicable(pipeline, context) is None
    applied = OPT.apply(pipeline, OPT.Config(), context)
    assert applied.notes["hit_rate"] == pytest.approx(56 / 64)
    # 8 of 64 inputs reach the model: planted ~8x, asserted generously.
    assert applied.notes["cold_pass_speedup"] > 2.0
    reference = pipeline.run()
    for a, b in zip(reference, applied.pipeline.run()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_refuses_training_mode(context):
    pipeline = accel.load(PLANTED / "dp_repeats.py")
    reason = OPT.applicable(pipeline.replace(model=nn.Linear(512, 2).train()), context)
    assert reason is not None and "training mode" in reason


def test_refuses_random_model(context):
    class Noisy(nn.Module):
        def forward(self, x):
            return x + torch.rand_like(x)

    pipeline = accel.load(PLANTED / "dp_repeats.py")
    reason = OPT.applicable(pipeline.replace(model=Noisy().eval()), context)
    assert reason is not None and "random" in reason
