"""Model-level optimizers on small real models: each returns a new pipeline whose model is a
drop-in callable (torch tensors in and out) with outputs that agree with the baseline."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

import accel
from accel.core.machine import describe_machine
from accel.optimizing.optimizers import OPTIMIZERS, Context, make_config
from accel.optimizing.optimizers.onnx_runtime import OrtModel
from accel.optimizing.optimizers.precision import MIN_FAST_RATIO, probe_ratio
from accel.optimizing.recipes.fidelity import compare_outputs

PLANTED = Path(__file__).parent / "planted"


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(16, 32)
        self.b = nn.Linear(8, 32)

    def forward(self, x, y):
        return torch.relu(self.a(x) + self.b(y)), self.a(x).sum(-1)


def _context(tmp_path):
    return Context(machine=describe_machine(), workdir=tmp_path)


def _mlp_pipeline(with_source: bool = False) -> accel.Pipeline:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)).eval()
    if with_source:
        return accel.Pipeline(model=model, source=[torch.randn(64) for _ in range(20)], batch_size=8)
    return accel.Pipeline(model=model, inputs=(torch.randn(4, 64),))


@pytest.mark.parametrize(
    "name, min_cosine",
    [
        ("onnx.runtime", 0.99999),
        ("onnx.int8_dynamic", 0.99),
        ("onnx.int8_static", 0.98),
        ("quantize.int8_dynamic", 0.99),
    ],
)
def test_model_optimizers_agree_with_the_baseline(tmp_path, name, min_cosine):
    pipeline = _mlp_pipeline()
    optimizer = OPTIMIZERS.get(name)
    assert optimizer.applicable(pipeline, _context(tmp_path)) is None
    applied = optimizer.apply(pipeline, make_config(optimizer, {}), _context(tmp_path))
    assert applied.pipeline is not pipeline and applied.pipeline.model is not pipeline.model
    with torch.inference_mode():
        expected = pipeline.forward(pipeline.inputs)
        got = applied.pipeline.forward(pipeline.inputs)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and got.shape == expected.shape
    assert compare_outputs(expected, got).cosine >= min_cosine
    assert json.loads(json.dumps(applied.state)) == applied.state  # the lock can record it
    assert applied.setup_seconds >= 0


def test_ort_model_keeps_the_call_signature_and_varying_batches(tmp_path):
    torch.manual_seed(0)
    samples = [(torch.randn(16), torch.randn(8)) for _ in range(10)]
    pipeline = accel.Pipeline(
        model=TwoInputs().eval(),
        source=samples,
        batch_size=4,
        collate=lambda batch: tuple(torch.stack(parts) for parts in zip(*batch)),
    )
    applied = OPTIMIZERS.get("onnx.runtime").apply(
        pipeline, make_config(OPTIMIZERS.get("onnx.runtime"), {}), _context(tmp_path)
    )
    assert isinstance(applied.pipeline.model, OrtModel)
    assert applied.state["session_options"]["intra_op_num_threads"] == torch.get_num_threads()
    assert applied.state["dynamic_axes"]["input_0"] == [0]
    expected, got = pipeline.run(), applied.pipeline.run()  # batches of 4, 4 and 2
    assert len(got) == 10 and isinstance(got[9], tuple)
    assert compare_outputs(expected, got).max_abs_error < 1e-4


def test_static_int8_is_calibrated_on_the_source(tmp_path):
    pipeline = _mlp_pipeline(with_source=True)
    optimizer = OPTIMIZERS.get("onnx.int8_static")
    applied = optimizer.apply(pipeline, make_config(optimizer, {"calibration_batches": 2}), _context(tmp_path))
    assert applied.state["calibrated_on"] == "source" and applied.state["calibration_batches"] == 2
    assert compare_outputs(pipeline.run(), applied.pipeline.run()).cosine > 0.98


def test_not_applicable_says_why(tmp_path):
    pipeline = accel.Pipeline(model=lambda x: x * 2, inputs=(torch.ones(2),))
    for name in ("onnx.runtime", "quantize.int8_dynamic", "precision.bf16", "compile"):
        reason = OPTIMIZERS.get(name).applicable(pipeline, _context(tmp_path))
        assert reason and "nn.Module" in reason
    conv_only = accel.Pipeline(model=nn.Conv2d(3, 4, 3).eval(), inputs=(torch.randn(1, 3, 8, 8),))
    assert "no nn.Linear" in OPTIMIZERS.get("quantize.int8_dynamic").applicable(conv_only, _context(tmp_path))


def test_half_precision_applies_only_where_it_is_fast(tmp_path):
    pipeline = _mlp_pipeline()
    for name in ("precision.bf16", "precision.fp16"):
        optimizer = OPTIMIZERS.get(name)
        reason = optimizer.applicable(pipeline, _context(tmp_path))
        ratio, how = optimizer.fast_ratio(_context(tmp_path))  # calibration when cached, else the probe
        assert (reason is None) == (ratio >= MIN_FAST_RATIO), (reason, ratio, how)
        assert probe_ratio(optimizer.dtype_name) > 0
    optimizer = OPTIMIZERS.get("precision.bf16")
    applied = optimizer.apply(pipeline, make_config(optimizer, {}), _context(tmp_path))
    got = applied.pipeline.forward(pipeline.inputs)
    assert got.dtype == torch.float32
    assert compare_outputs(pipeline.forward(pipeline.inputs), got).cosine > 0.99


def test_calibrated_machine_decides_half_precision(tmp_path):
    machine = dataclasses.replace(describe_machine(), peak_gflops_by_dtype={"float32": 100.0, "bfloat16": 50.0})
    reason = OPTIMIZERS.get("precision.bf16").applicable(_mlp_pipeline(), Context(machine=machine, workdir=tmp_path))
    assert reason and "0.50x" in reason and "calibration" in reason


@pytest.mark.slow
def test_compile_reports_its_one_time_cost(tmp_path):
    pipeline = _mlp_pipeline()
    optimizer = OPTIMIZERS.get("compile")
    if optimizer.applicable(pipeline, _context(tmp_path)):
        pytest.skip("no compiler here")
    applied = optimizer.apply(pipeline, make_config(optimizer, {}), _context(tmp_path))
    assert applied.setup_seconds > 0 and applied.notes["compile_seconds"] >= 0
    with torch.inference_mode():
        assert (
            compare_outputs(pipeline.forward(pipeline.inputs), applied.pipeline.forward(pipeline.inputs)).cosine
            > 0.9999
        )


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_config_round_trips_through_json(name):
    optimizer = OPTIMIZERS.get(name)
    config = make_config(optimizer, {})
    data = json.loads(json.dumps(dataclasses.asdict(config)))
    assert make_config(optimizer, data) == config
    assert optimizer.description and optimizer.name == name
