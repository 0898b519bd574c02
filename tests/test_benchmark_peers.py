"""benchmarks/peers.py at tiny sizes: `python -m benchmarks peers --quick` runs every peer that
applies and accel on a small MLP, compares their outputs with the eager model's, and prints the
table with the CPU class; the models it builds (ResNet-50 from plain torch modules) are right."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks._peer_models import build
from benchmarks.peers import PEERS

ROOT = Path(__file__).resolve().parent.parent
# The smallest cosine a peer's output may have against the eager model's (int8 ones included).
MIN_COSINE = 0.99


@pytest.mark.slow
def test_the_quick_benchmark_prints_every_peer_and_accel():
    # the console entry (a subprocess): accel optimize then other runtimes in one long-lived process
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-m", "benchmarks", "peers", "--quick", "--models=wide_mlp"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    cosines = {m.group(1): float(m.group(2)) for m in re.finditer(r"^  (.+?): .*cos (\S+)$", out, re.MULTILINE)}
    for label in ("OpenVINO fp32", "OpenVINO NNCF int8", "ORT fused fp32", "ORT fused int8", "accel"):
        assert cosines[label] >= MIN_COSINE, out
    assert re.search(r"^CPU: .*\(\w+; .*\); 2 threads each; load average", out, re.MULTILINE), out
    header = next(line for line in out.splitlines() if line.startswith("model "))
    assert all(label in header for label, _, _ in PEERS) and "accel / best peer within the guard" in header
    assert "*: outside accel's guard" in out
    row = next(line for line in out.splitlines() if line.startswith("MLP (tiny) "))
    assert re.search(r"\d+\.\d\dx \(", row) and re.search(r"\d\.\d\d \[\d\.\d\d, \d\.\d\d\] vs ", row), row


@pytest.mark.slow
def test_the_resnet_is_resnet_50_and_the_text_models_take_keywords():
    resnet = build("resnet", quick=False).model
    assert sum(p.numel() for p in resnet.parameters()) == 25_557_032  # torchvision's resnet50, counted
    tiny = build("resnet", quick=True)
    with torch.inference_mode():
        assert tiny.call(tiny.model).shape == (1, 10)
    bert = build("bert", quick=True)
    assert set(bert.batch) == {"input_ids", "attention_mask"} and bert.fusion_type == "bert"
    bert16 = build("bert16", quick=True)
    assert bert16.inputs[0].shape[0] == 16


@pytest.mark.slow
def test_the_generate_case_loops_the_fused_step_to_eager_generates_tokens(tmp_path):
    from accel.optimizing.optimizers._generate_step import export_step
    from benchmarks._peer_generate import kv_loop, ort_fused

    case = build("gpt2_generate", quick=True)
    (ids,) = case.inputs
    with torch.inference_mode():
        expected = case.call(case.model)
    assert expected.shape == (1, ids.shape[1] + case.new_tokens)  # generate() ran every token (eos off)
    layout = export_step(case.model, ids, tmp_path / "step.onnx", opset=17)
    step = ort_fused(case, tmp_path / "step.onnx", tmp_path, False, 2)
    assert torch.equal(kv_loop(step, layout, ids, case.new_tokens), expected)


@pytest.mark.slow
def test_the_corpus_case_runs_each_peer_over_the_whole_padded_stream(tmp_path):
    from accel.optimizing.search.fidelity import compare_outputs
    from benchmarks._peer_runtimes import openvino, ort_fused
    from benchmarks.peers import _timed

    case = build("corpus", quick=True)
    assert case.stream is not None and case.fusion_type == "bert"
    lengths = {len(s) for s in case.stream.source}
    assert min(lengths) < 48 and max(lengths) > 200  # the long tail the stream pads to
    with torch.inference_mode():
        expected = _timed(case, case.model)()
        assert len(expected) == len(case.stream.source)  # one result a sequence, trimmed to its tokens
        for make in (ort_fused, openvino):  # graphs with dynamic batch and sequence axes
            folder = tmp_path / make.__name__
            folder.mkdir()
            got = _timed(case, peer=make(case, folder, False))()
            assert [t.shape for t in got] == [t.shape for t in expected]
            assert compare_outputs(expected, got).cosine > 0.9999
