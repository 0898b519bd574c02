"""Calibration: the CPU's ISA class, the cures' own kernels, and the noise rule that keeps a
calibration taken under load from being trusted for good."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from accel.core import calibration as calibration_module
from accel.core.calibration import (
    MIN_CPU_SHARE,
    Calibration,
    Check,
    cache_path,
    calibrate,
    calibrated_machine,
    decide_cached,
    load_cached,
    noise_reason,
)
from accel.core.cure_kernels import BASELINE_KERNEL, KERNELS
from accel.core.machine import Machine, classify_cpu, describe_machine, parse_isa_flags, usable_cores
from accel.core.steady import BEST_OF, SPREAD_LIMIT, sample_until_steady, spread

ZEN3_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu vme sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni
processor\t: 1
flags\t\t: fpu avx512f
"""
SAPPHIRE_RAPIDS_FLAGS = "flags : avx2 fma avx512f avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8"
GRAVITON3_CPUINFO = "processor : 0\nFeatures : fp asimd evtstrm aes sve i8mm bf16\n"


@pytest.fixture(autouse=True)
def _cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCEL_CACHE_DIR", str(tmp_path / "cache"))


# --- ISA -------------------------------------------------------------------------------------------


def test_isa_flags_are_read_from_the_first_processor_and_name_the_cpu_class():
    assert parse_isa_flags(ZEN3_CPUINFO) == ("avx2", "fma")  # processor 1's avx512f is not read
    assert classify_cpu(parse_isa_flags(ZEN3_CPUINFO)) == "avx2"
    assert classify_cpu(parse_isa_flags(SAPPHIRE_RAPIDS_FLAGS)) == "amx"
    assert classify_cpu(("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16")) == "avx512_bf16"
    assert classify_cpu(("avx2", "fma", "avx512f")) == "avx512"
    assert parse_isa_flags(GRAVITON3_CPUINFO) == ("asimd", "sve", "i8mm", "bf16")
    assert classify_cpu(parse_isa_flags(GRAVITON3_CPUINFO)) == "sve"


def test_without_cpuinfo_the_class_comes_from_torchs_capability():
    assert parse_isa_flags("") == ()
    assert classify_cpu((), "AVX2") == "avx2"
    assert classify_cpu((), "DEFAULT") == "generic" and classify_cpu(()) == "generic"


def test_machine_json_carries_the_isa_and_reads_old_files_without_it():
    machine = dataclasses.replace(
        describe_machine("cpu"), isa_flags=("avx2", "fma"), cpu_capability="AVX2", cure_gflops={"ort_int8": 50.0}
    )
    data = json.loads(json.dumps(machine.to_dict()))
    assert data["cpu_class"] == "avx2" and data["isa_flags"] == ["avx2", "fma"]
    assert Machine.from_dict(data) == machine
    old = {k: v for k, v in data.items() if k not in ("isa_flags", "cpu_capability", "cure_gflops", "cpu_class")}
    read = Machine.from_dict(old)
    assert read.isa_flags == () and read.cure_gflops == {} and read.cpu_class == "generic"


def test_best_cure_rate_is_the_fastest_kernel_a_cure_runs_in_that_dtype():
    machine = dataclasses.replace(
        describe_machine("cpu"),
        cure_gflops={
            BASELINE_KERNEL: 100.0,
            "int8_dynamic_fbgemm": 400.0,
            "ort_int8": 300.0,
            "bf16_linear": 1.0,
            "bf16_autocast_linear": 2.0,
        },
    )
    assert machine.best_cure_gflops("int8") == (400.0, "int8_dynamic_fbgemm")
    assert machine.cure_speedup("int8") == (4.0, "int8_dynamic_fbgemm")
    assert machine.best_cure_gflops("bf16") == (2.0, "bf16_autocast_linear")
    assert machine.best_cure_gflops("fp32") is None  # the eager baseline is no cure
    assert machine.best_cure_gflops("fp16") is None and machine.cure_speedup("fp16") is None
    assert dataclasses.replace(machine, cure_gflops={}).cure_speedup("int8") is None


# --- steady timing and the noise rule --------------------------------------------------------------


class ScriptedCalls:
    """Calls whose durations are scripted, on a fake clock."""

    def __init__(self, durations):
        self.durations = list(durations)
        self.t = 0.0

    def clock(self):
        return self.t

    def call(self):
        self.t += self.durations.pop(0)


def test_calls_are_repeated_until_their_best_few_agree():
    script = ScriptedCalls([1.0, 2.0, 1.5, 1.3, 1.02, 1.01, 9.0])
    got = sample_until_steady({"gemm": script.call}, cap_seconds=100, clock=script.clock)["gemm"]
    assert got.samples == pytest.approx((1.0, 2.0, 1.5, 1.3, 1.02, 1.01))  # stopped: 1.0, 1.01, 1.02 agree
    assert got.best_seconds == 1.0 and got.spread <= SPREAD_LIMIT
    assert spread([1.0, 2.0]) == float("inf")


def test_the_cap_stops_a_measurement_that_never_settles_after_best_of_calls():
    script = ScriptedCalls([1.0, 3.0] * 20)
    got = sample_until_steady({"gemm": script.call}, cap_seconds=4.5, clock=script.clock)["gemm"]
    assert len(got.samples) == BEST_OF and got.spread > SPREAD_LIMIT


def test_noise_rule_names_the_spread_the_cpu_share_and_the_load():
    assert noise_reason({"fp32 GEMM": 0.02}, {"fp32 GEMM": 0.97}, 0.5, 2) is None
    assert "fp32 GEMM varied 30%" in noise_reason({"fp32 GEMM": 0.3}, {}, None, 2)
    assert "ran 40%" in noise_reason({"fp32 GEMM": 0.02}, {"fp32 GEMM": 0.4}, None, 2)
    assert "load average was 3.5 on 2" in noise_reason({}, {}, 3.5, 2)
    # ONNX Runtime's pool competes with this process's own spinning OpenMP threads: its share is not
    # other processes' load (67% measured alone at load 1.2); its spread still counts
    assert noise_reason({"ort_fp32": 0.02}, {"fp32 GEMM": 0.97, "ort_fp32": 0.67}, 1.2, 2) is None
    assert "ort_fp32 varied 30%" in noise_reason({"ort_fp32": 0.3}, {"ort_fp32": 0.67}, 1.2, 2)


def _calibration(**changes):
    base = Calibration(
        device="cpu",
        peak_bandwidth_gbs=20.0,
        peak_gflops_by_dtype={"fp32": 100.0},
        working_set_bytes=1,
        seconds=1.0,
        cure_gflops={BASELINE_KERNEL: 50.0, "int8_dynamic_fbgemm": 200.0},
        cure_unavailable={
            name: "not run here" for name in KERNELS if name not in (BASELINE_KERNEL, "int8_dynamic_fbgemm")
        },
        spreads={"fp32 GEMM": 0.01},
        cpu_shares={"fp32 GEMM": 0.99},
        load_average=0.1,
        cores=2,
        threads=2,
        check_gflops=80.0,
        check_gbs=10.0,
    )
    return dataclasses.replace(base, **changes)


QUIET = Check(gflops=80.0, gbs=10.0, cpu_share=0.99, load_average=0.1, cores=2)


def test_calibration_round_trips_with_its_noise_figures():
    noisy = _calibration(noise_reason="fp32 GEMM varied 30%")
    data = json.loads(json.dumps(noisy.to_dict()))
    assert data["noisy"] is True and data["schema"] == "accel.calibration/2"
    assert Calibration.from_dict(data) == noisy
    assert noisy.spread == 0.01 and noisy.cpu_share == 0.99


def test_a_cached_calibration_is_used_only_while_the_quick_check_agrees():
    clean = _calibration()
    assert decide_cached(clean, QUIET).use_cached
    slower = dataclasses.replace(QUIET, gflops=50.0)
    decision = decide_cached(clean, slower)
    assert not decision.use_cached and "0.62x" in decision.reason
    assert not decide_cached(_calibration(noise_reason="loaded"), QUIET).use_cached
    assert not decide_cached(_calibration(check_gflops=None), QUIET).use_cached
    # a cache taken before a cure kernel was added: its cure is predicted from nothing until measured
    older = _calibration(cure_unavailable={})
    decision = decide_cached(older, QUIET)
    assert not decision.use_cached and "lacks the cure kernels" in decision.reason and "ort_int8" in decision.reason
    busy = dataclasses.replace(QUIET, gflops=20.0, cpu_share=MIN_CPU_SHARE / 2)
    decision = decide_cached(_calibration(noise_reason="loaded"), busy)
    assert decision.use_cached and "busy" in decision.reason  # measuring now would be no better


def test_a_noisy_calibration_is_cached_flagged_and_not_used_as_it_is(monkeypatch):
    measured = []

    def fake_calibrate(machine, *, quick=False, progress=None):
        reason = "fp32 GEMM varied 30% over its best 3 calls" if not measured else None
        measured.append(reason)
        return _calibration(noise_reason=reason, peak_gflops_by_dtype={"fp32": 10.0 * len(measured)})

    monkeypatch.setattr(calibration_module, "calibrate", fake_calibrate)
    monkeypatch.setattr(calibration_module, "quick_check", lambda machine: QUIET)
    machine = describe_machine("cpu")
    first = calibrated_machine(machine)
    assert first.calibration_noisy and first.peak_gflops == 10.0
    assert json.loads(cache_path(machine).read_text())["noisy"] is True
    second = calibrated_machine(machine)  # the machine is quiet now: measured again, not read back
    assert len(measured) == 2 and second.peak_gflops == 20.0 and not second.calibration_noisy
    assert calibrated_machine(machine).peak_gflops == 20.0 and len(measured) == 2  # clean: from the cache


def test_a_noisy_cache_on_a_still_busy_machine_marks_the_machine_noisy(monkeypatch):
    machine = describe_machine("cpu")
    noisy = _calibration(noise_reason="the 1-minute load average was 5.0 on 2 usable cores")
    cache_path(machine).parent.mkdir(parents=True)
    cache_path(machine).write_text(json.dumps(noisy.to_dict()))
    monkeypatch.setattr(calibration_module, "quick_check", lambda m: dataclasses.replace(QUIET, load_average=5.0))
    monkeypatch.setattr(calibration_module, "calibrate", lambda *a, **k: pytest.fail("measured on a busy machine"))
    assert calibrated_machine(machine).calibration_noisy


# --- real measurements ----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_cures_kernels_are_measured_beside_the_peaks():
    machine = describe_machine("cpu")
    calibration = calibrate(machine, quick=True)
    assert calibration.cure_gflops and all(rate > 0 for rate in calibration.cure_gflops.values())
    assert set(calibration.cure_gflops) | set(calibration.cure_unavailable) == set(KERNELS)
    assert {BASELINE_KERNEL, "int8_dynamic_fbgemm", "ort_int8", "ort_fp32"} <= set(calibration.cure_gflops)
    assert set(calibration.peak_gflops_by_dtype) <= {"fp32", "bf16", "fp16", "int8"}
    assert set(calibration.spreads) >= {"bandwidth", "fp32 GEMM", "ort_int8"}
    assert calibration.cores == usable_cores() and calibration.check_gflops > 0
    calibrated = calibration.apply(machine)
    assert calibrated.best_cure_gflops("int8")[1] in ("int8_dynamic_fbgemm", "ort_int8")
    assert calibrated.cure_speedup("int8")[0] > 0


BURNERS = 3


@pytest.mark.slow
def test_a_calibration_beside_cpu_burners_is_not_trusted():
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(BURNERS)]
    try:
        machine = calibrated_machine(describe_machine("cpu"), quick=True)
    finally:
        for burner in burners:
            burner.kill()
        for burner in burners:
            burner.wait(timeout=10)
    assert all(burner.poll() is not None for burner in burners)
    cached = load_cached(machine)
    assert cached is not None and cached.noisy == machine.calibration_noisy
    # Whatever the machine, the decision follows the recorded figures...
    recorded = noise_reason(cached.spreads, cached.cpu_shares, cached.load_average, cached.cores)
    assert cached.noise_reason == recorded
    # ...and where the burners alone fill every core, they show in those figures.
    if usable_cores() <= BURNERS:
        assert cached.noisy, cached.to_dict()
