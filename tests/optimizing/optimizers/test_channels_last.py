"""layout.channels_last on a real CNN (transformers' ResNet at random init, tests/real/) and where
it does not apply. What must hold on any CPU: the copy's convolution weights and inputs are
channels-last and its class is the model's; the outputs agree with the baseline's; the baseline is
untouched; it composes with bf16 (the convolutions then run bf16 and channels-last); models without
convolutions or without an image input are told apart with their reasons."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import accel
from accel.core.machine import describe_machine
from accel.optimizing.optimizers import OPTIMIZERS, Context, make_config
from accel.optimizing.search.fidelity import compare_outputs
from tests.paths import EXAMPLES, REAL

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def resnet() -> accel.Pipeline:
    spec = importlib.util.spec_from_file_location("real_resnet_classifier", REAL / "resnet_classifier.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.pipeline()


def _apply(name: str, pipeline: accel.Pipeline, tmp_path: Path, **params) -> accel.Pipeline:
    optimizer = OPTIMIZERS.get(name)
    context = Context(machine=describe_machine(), workdir=tmp_path)
    return optimizer.apply(pipeline, make_config(optimizer, params), context).pipeline


def _conv_inputs(model: torch.nn.Module, batch) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    handles = [
        m.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
        for m in model.modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    try:
        with torch.inference_mode():
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_resnet_runs_channels_last_with_the_same_outputs(resnet, tmp_path):
    candidate = _apply("layout.channels_last", resnet, tmp_path)
    model = candidate.model
    assert type(model) is type(resnet.model)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    batch = resnet.example_batch()
    first = _conv_inputs(model, batch)[0]
    assert first.is_contiguous(memory_format=torch.channels_last) and not batch.is_contiguous(
        memory_format=torch.channels_last
    )
    # (a 1x1 kernel is both layouts at once: the 3x3 ones tell the baseline's apart)
    baseline_convs = [m for m in resnet.model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    assert baseline_convs
    assert not any(c.weight.is_contiguous(memory_format=torch.channels_last) for c in baseline_convs)
    with torch.inference_mode():
        reference, output = resnet.call_model(batch), candidate.call_model(batch)
    assert type(output) is type(reference)
    assert compare_outputs(reference, output).cosine >= 0.9999


def test_channels_last_composes_with_bf16(resnet, tmp_path):
    both = _apply("layout.channels_last", _apply("precision.bf16", resnet, tmp_path), tmp_path)
    inputs = _conv_inputs(both.model, resnet.example_batch())
    assert inputs and all(t.dtype == torch.bfloat16 for t in inputs)
    assert all(t.is_contiguous(memory_format=torch.channels_last) for t in inputs if t.shape[1] > 1)
    with torch.inference_mode():
        output = both.call_model(resnet.example_batch())
    assert output.logits.dtype == torch.float32  # float32 at the interface still


def test_not_applicable_without_convolutions_or_an_image_input(resnet, tmp_path):
    optimizer = OPTIMIZERS.get("layout.channels_last")
    context = Context(machine=describe_machine(), workdir=tmp_path)
    assert "no 2-D convolution" in optimizer.applicable(accel.load(EXAMPLES / "wide_mlp.py"), context)
    flat = resnet.replace(source=None, inputs=(torch.zeros(2, 3 * 64 * 64),))
    assert "4-D" in optimizer.applicable(flat, context)
    assert "already" in optimizer.applicable(_apply("layout.channels_last", resnet, tmp_path), context)
