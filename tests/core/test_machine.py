"""Machine facts and calibration: plausible peaks, the cache, the CLI."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from accel.cli import app
from accel.core.calibration import Calibration, cache_path, calibrate, calibrated_machine, load_cached
from accel.core.machine import Machine, describe_machine


@pytest.fixture(autouse=True)
def _cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCEL_CACHE_DIR", str(tmp_path / "xdg"))


def test_describe_machine_reads_static_facts():
    machine = describe_machine("cpu")
    assert machine.device == "cpu" and machine.cores >= 1 and not machine.calibrated
    assert Machine.from_dict(machine.to_dict()) == machine


@pytest.mark.slow
def test_calibration_figures_fall_in_plausible_ranges_and_are_cached():
    machine = calibrated_machine(describe_machine("cpu"), quick=True)
    # DRAM streams somewhere between a slow laptop and an HBM GPU; GEMMs between a phone core and a datacenter GPU.
    assert 0.5 < machine.peak_bandwidth_gbs < 5000
    assert 0.5 < machine.peak_gflops < 2_000_000
    assert machine.peak_gflops == machine.peak_gflops_by_dtype["fp32"]
    assert set(machine.peak_gflops_by_dtype) <= {"fp32", "bf16", "fp16", "int8"}
    assert machine.calibrated and machine.ridge_flops_per_byte > 0
    path = cache_path(machine)
    assert path.exists() and str(path).startswith(str(path.parents[1]))
    assert json.loads(path.read_text())["schema"] == "accel.calibration/2"
    assert machine.cure_gflops and machine.calibration_noisy == json.loads(path.read_text())["noisy"]
    report = machine.to_dict()
    assert {"device", "peak_bandwidth_gbs", "peak_gflops", "peak_gflops_by_dtype", "cpu_class"} <= set(report)


def test_a_clean_cached_calibration_is_read_back_when_the_quick_check_agrees(monkeypatch):
    from accel.core import calibration as calibration_module
    from accel.core.calibration import Check
    from accel.core.cure_kernels import KERNELS
    from accel.core.io import write_json_atomic

    machine = describe_machine("cpu")
    cached = Calibration(
        device="cpu",
        peak_bandwidth_gbs=10.0,
        peak_gflops_by_dtype={"fp32": 100.0},
        working_set_bytes=1,
        seconds=1.0,
        cure_gflops={"ort_int8": 300.0},
        # every other kernel recorded as not run: a cache lacking one is measured again
        cure_unavailable={name: "not run here" for name in KERNELS if name != "ort_int8"},
        check_gflops=50.0,
        check_gbs=5.0,
    )
    write_json_atomic(cache_path(machine), cached.to_dict())
    check = Check(gflops=52.0, gbs=4.8, cpu_share=1.0, load_average=0.0, cores=machine.cores)
    monkeypatch.setattr(calibration_module, "quick_check", lambda m: check)
    monkeypatch.setattr(calibration_module, "calibrate", lambda *a, **k: pytest.fail("measured again"))
    again = calibrated_machine(machine)  # from the cache, not measured again
    assert again.peak_gflops == 100.0 and again.cure_gflops == {"ort_int8": 300.0} and not again.calibration_noisy


def test_cache_is_keyed_by_torch_version_and_a_corrupt_file_is_measured_again(tmp_path):
    import dataclasses

    machine = describe_machine("cpu")
    other = dataclasses.replace(machine, torch_version="0.0.1")
    assert cache_path(machine) != cache_path(other)
    cache_path(machine).parent.mkdir(parents=True)
    cache_path(machine).write_text("{not json")
    assert load_cached(machine) is None


def test_calibration_round_trips_and_rejects_missing_fp32():
    calibration = Calibration(
        device="cpu", peak_bandwidth_gbs=10.0, peak_gflops_by_dtype={"fp32": 100.0}, working_set_bytes=1, seconds=1.0
    )
    assert Calibration.from_dict(json.loads(json.dumps(calibration.to_dict()))) == calibration
    with pytest.raises(ValueError):
        Calibration(device="cpu", peak_bandwidth_gbs=10.0, peak_gflops_by_dtype={}, working_set_bytes=1, seconds=1.0)


@pytest.mark.slow
def test_calibrate_command_prints_the_peaks():
    result = CliRunner().invoke(app, ["calibrate", "--quick", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "memory bandwidth" in result.output and "fp32 GEMM" in result.output
    assert "CPU class" in result.output and "int8_dynamic_fbgemm" in result.output and "noise:" in result.output


def test_calibrate_command_rejects_an_unknown_device():
    result = CliRunner().invoke(app, ["calibrate", "--device", "tpu"])
    assert result.exit_code == 2


@pytest.mark.gpu
def test_cuda_calibration_measures_the_gpu():
    calibration = calibrate(describe_machine("cuda"), quick=True)
    assert calibration.device.startswith("cuda") and calibration.peak_bandwidth_gbs > 50
