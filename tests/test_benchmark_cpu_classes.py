"""`python -m benchmarks cpu_classes`: the classes, the environment each class's process gets, the
spec that process reads, and the tables rendered from recorded results: pure and fast. That the
variables restrict torch's kernels in a fresh process is tests/profiling/test_cpu_classes.py's."""

from __future__ import annotations

import dataclasses
import json

from benchmarks.cpu_classes import AVX2_ENV, CLASSES, WorkerSpec, class_env, parse_spec, render, worker_command

RECORDED = {
    "native": {
        "calibration": {
            "cpu_class": "avx512_bf16",
            "capability": "AVX512",
            "gflops": {"fp32_linear": 50.0, "int8_dynamic_fbgemm": 100.0, "ort_int8": 200.0},
            "unavailable": {"fp16_linear": "RuntimeError: no"},
            "noise_reason": None,
        },
        "actions": [
            {
                "model": "m",
                "optimizer": "onnx.int8_dynamic",
                "speedup": 2.0,
                "ci": [1.8, 2.2],
                "cosine": 0.9991,
                "accel_skips": None,
            },
            {"model": "m", "optimizer": "precision.bf16", "note": "failed: RuntimeError: x"},
        ],
        "load_average": [1.0, 1.5],
    },
    "avx2 emulated": {
        "calibration": {
            "cpu_class": "avx2",
            "capability": "AVX2",
            "gflops": {"fp32_linear": 40.0, "int8_dynamic_fbgemm": 90.0},
            "unavailable": {},
            "noise_reason": "load",
        },
        "actions": [
            {
                "model": "m",
                "optimizer": "precision.bf16",
                "speedup": 0.5,
                "ci": [0.4, 0.6],
                "cosine": 0.99999,
                "accel_skips": "bf16 is slow here",
            },
        ],
        "load_average": [2.0, 2.5],
    },
}


def test_the_classes_are_native_and_avx2_emulated():
    assert [c.label for c in CLASSES] == ["native", "avx2 emulated"]
    native, avx2 = CLASSES
    assert native.env == {} and not native.emulated
    assert avx2.emulated and avx2.env["ATEN_CPU_CAPABILITY"] == "avx2" and avx2.env["ONEDNN_MAX_CPU_ISA"] == "AVX2"


def test_class_env_drops_inherited_restrictions_and_sets_the_class_own():
    inherited = {"PATH": "/bin", **AVX2_ENV}
    native, avx2 = CLASSES
    assert class_env(inherited, native) == {"PATH": "/bin"}
    assert class_env({"PATH": "/bin"}, avx2) == {"PATH": "/bin", **AVX2_ENV}


def test_the_worker_reads_back_the_spec_it_was_given():
    spec = WorkerSpec(quick=True, models=(("wide_mlp", "examples/wide_mlp.py"),), actions=("onnx.runtime",))
    command = worker_command(spec)
    assert command[1:3] == ["-m", "benchmarks.cpu_classes"]
    assert parse_spec(command[-1]) == spec
    assert parse_spec(json.dumps(dataclasses.asdict(WorkerSpec()))) == WorkerSpec()


def test_the_tables_mark_own_dispatch_kernels_and_actions_accel_skips():
    text = "\n".join(render(RECORDED))
    assert "native (avx512_bf16)" in text and "avx2 emulated (avx2)" in text
    assert "100.0 (2.00x)" in text  # native fbgemm: no mark
    assert "90.0 (2.25x)*" in text  # fbgemm under emulation: the CPU's own kernel, marked
    assert "n/a" in text  # fp16 could not run natively
    assert "2.00x [1.80, 2.20] cos 0.9991" in text
    assert "0.50x [0.40, 0.60] cos 1.0000!" in text
    assert "failed: RuntimeError" in text
    assert "calibration noisy: load" in text


def test_a_class_that_failed_is_named_with_why():
    assert render({"native": {"error": "exit 1, no result"}}) == ["native: exit 1, no result"]
