"""patch.inference: exact on many conv configurations (property-based), lower measured peak, refusals."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import accel
from accel.core.machine import describe_machine
from accel.core.measure import peak_memory_bytes
from accel.optimizing.optimizers import OPTIMIZERS, Context
from accel.optimizing.optimizers._patch import patch_sequential
from accel.profiling.patch_layers import AxisOp, describe_layer
from tests.paths import PLANTED

OPT = OPTIMIZERS.get("patch.inference")


@pytest.fixture
def context(tmp_path):
    return Context(machine=describe_machine(), workdir=tmp_path)


@st.composite
def local_layer(draw, channels):
    kind = draw(st.sampled_from(["conv", "conv", "maxpool", "avgpool", "bn", "act"]))
    kernel = draw(st.integers(1, 4))
    stride = draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 2))
    if kind == "conv":
        padding = draw(st.integers(0, 3))
        groups = draw(st.sampled_from([1, channels]))
        return nn.Conv2d(channels, channels, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups)
    if kind == "maxpool":
        padding = draw(st.integers(0, (dilation * (kernel - 1) + 1) // 2 if kernel > 1 else 0))
        return nn.MaxPool2d(kernel, stride=stride, padding=min(padding, kernel // 2), dilation=dilation)
    if kind == "avgpool":
        return nn.AvgPool2d(
            kernel, stride=stride, padding=draw(st.integers(0, kernel // 2)), count_include_pad=draw(st.booleans())
        )
    if kind == "bn":
        bn = nn.BatchNorm2d(channels)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        return bn
    return draw(st.sampled_from([nn.ReLU(), nn.GELU(), nn.SiLU(), nn.Dropout(0.5)]))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(), depth=st.integers(1, 4), size=st.integers(12, 30), grid=st.integers(2, 4), seed=st.integers(0, 1000)
)
def test_patched_stage_is_exact(data, depth, size, grid, seed):
    torch.manual_seed(seed)
    layers, height = [], size
    for _ in range(depth):
        layer = data.draw(local_layer(4)).eval()
        described = describe_layer(layer)
        if isinstance(described, str):  # e.g. padding as wide as the kernel: refused, not patched
            continue
        out = described.rows.output_size(height)
        if out < 1:
            break
        layers.append(layer)
        height = out
    if not layers:
        return
    model = nn.Sequential(*layers, nn.Conv2d(4, 2, 1)).eval()
    x = torch.randn(2, 4, size, size + 3)
    with torch.inference_mode():
        reference = model(x)
        patched = patch_sequential(model, len(layers), grid)(x)
    torch.testing.assert_close(patched, reference, rtol=1e-5, atol=1e-5 * float(reference.abs().max()))


def test_interval_arithmetic():
    op = AxisOp(kernel=3, stride=2, pad_before=1, pad_after=1, dilation=2)
    assert op.input_interval(0, 1) == (-1, 4)
    assert op.input_interval(2, 5) == (3, 12)
    assert op.output_size(16) == 7


@pytest.mark.slow
def test_planted_peak_memory_halves_and_output_matches(context):
    pipeline = accel.load(PLANTED / "dp_highres_cnn.py")
    assert OPT.applicable(pipeline, context) is None
    applied = OPT.apply(pipeline, OPT.Config(grids=(4,)), context)
    notes = applied.notes
    assert notes["peak_bytes_after"] <= 0.5 * notes["peak_bytes_before"]
    assert notes["halo_extra_compute_share"] > 0
    x = pipeline.inputs[0]
    with torch.inference_mode():
        reference = pipeline.model(x)
        patched = applied.pipeline.model(x)
        # Measured independently of the optimizer's own numbers.
        before = peak_memory_bytes(lambda: pipeline.model(x))
        after = peak_memory_bytes(lambda: applied.pipeline.model(x))
    torch.testing.assert_close(patched, reference, rtol=1e-5, atol=1e-5 * float(reference.abs().max()))
    assert after < 0.5 * before
    restored = OPT.restore(pipeline, OPT.Config(), applied.state, context.workdir)
    with torch.inference_mode():
        torch.testing.assert_close(restored.model(x), reference, rtol=1e-5, atol=1e-6)


def test_stem_child_of_a_larger_model(context):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(8, 8, 3, stride=2, padding=1),
                nn.ReLU(),
            )
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.features(x).mean((2, 3)))

    net = Net().eval()
    pipeline = accel.Pipeline(model=net, inputs=(torch.randn(1, 3, 64, 64),))
    assert OPT.applicable(pipeline, context) is None
    applied = OPT.apply(pipeline, OPT.Config(grids=(2,)), context)
    assert applied.state["module"] == "features"
    assert type(net.features) is nn.Sequential  # the original is untouched
    with torch.inference_mode():
        torch.testing.assert_close(
            applied.pipeline.model(*pipeline.inputs), net(*pipeline.inputs), rtol=1e-5, atol=1e-6
        )


@pytest.mark.parametrize(
    "first, reason",
    [
        (nn.AdaptiveAvgPool2d(1), "global pooling"),
        (nn.Flatten(), "flatten"),
        (nn.GroupNorm(1, 3), "normalizes over space"),
    ],
)
def test_refuses_layers_it_cannot_patch(first, reason, context):
    model = nn.Sequential(first, nn.Conv2d(3, 3, 3)).eval()
    pipeline = accel.Pipeline(model=model, inputs=(torch.randn(1, 3, 16, 16),))
    why = OPT.applicable(pipeline, context)
    assert why is not None and reason in why


def test_refuses_attention_and_training_mode(context):
    assert "attention" in describe_layer(nn.MultiheadAttention(8, 2))
    model = nn.Sequential(nn.Conv2d(3, 3, 3), nn.BatchNorm2d(3))
    pipeline = accel.Pipeline(model=model.train(), inputs=(torch.randn(1, 3, 16, 16),))
    assert "training mode" in OPT.applicable(pipeline, context)
    assert "normalization over space" in describe_layer(nn.BatchNorm2d(3).train())
