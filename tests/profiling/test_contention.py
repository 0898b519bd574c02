"""Contention: a profile on an oversubscribed machine says so, with the numbers and what to do, and
the loader's predictions count only the cores the other work leaves idle (issue 26: "num_workers=2
saves 50%" predicted on a 2-core machine at load 6, measured 0.89x and 0.96x by hand)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import accel
from accel.core import calibration
from accel.core.calibration import busy_cores
from accel.optimizing.optimizers.loader_tune import Setting, predicted_seconds_per_sample
from accel.profiling import contention
from accel.profiling.analyzers import analyze
from accel.profiling.contention import Contention, idle_cores, oversubscription_note
from tests.profiling.analyzers.recorded import loader_machine, recorded


def test_idle_cores_are_the_cores_the_load_leaves():
    assert Contention(0.2, 4, 1).idle_cores == 4
    assert Contention(2.0, 4, 1).idle_cores == 2
    assert Contention(9.5, 2, 2).idle_cores == 1  # never below one: the run gets a core some of the time
    with pytest.raises(ValueError, match="cores"):
        Contention(1.0, 0, 1)


def test_an_oversubscribed_machine_gets_a_note_with_its_numbers_and_what_to_do():
    busy = Contention(6.3, 2, 2)
    note = oversubscription_note(busy)
    assert "oversubscribed" in note and "load average 6.3" in note and "2 threads on 2 cores" in note
    assert "--threads 1" in note and "OMP_NUM_THREADS=1" in note and "quieter machine" in note
    assert busy.to_dict()["oversubscribed"] is True
    assert oversubscription_note(Contention(0.4, 4, 2)) is None  # 0.4 + 2 threads fit 4 cores
    assert oversubscription_note(Contention(1.5, 2, 1)) is not None  # 1.5 + 1 thread do not fit 2


def test_the_loaders_prediction_counts_only_idle_cores():
    # 8 ms of transform, 2 ms of model per sample, serial; 4 cores (a GPU machine: no contention).
    quiet = recorded(0.0, 8.0, 2.0)
    (alone,) = analyze(quiet, loader_machine(4), ["data_loading"])
    assert alone.impact == pytest.approx(0.8, rel=1e-6)  # max(2, 8 / 4) = 2 ms of 10
    busy = recorded(0.0, 8.0, 2.0)
    busy.extra["contention"] = Contention(3.0, 4, 1).to_dict()  # one core left idle
    (loaded,) = analyze(busy, loader_machine(4), ["data_loading"])
    assert loaded.evidence["cores"] == 1 and loaded.evidence["tuned_workers"] == 1
    assert loaded.impact == pytest.approx(0.2, rel=1e-6)  # max(2, 8 / 1) = 8 ms of 10
    assert "num_workers=1 on the 1 of 4 cores idle is predicted to save 20%" in loaded.summary
    assert loaded.evidence["predicted_saving_on_a_quiet_machine"] == pytest.approx(0.8, rel=1e-6)
    assert "load average 3.0" in loaded.summary and "too noisy to decide" in loaded.summary
    assert idle_cores({}, 4) == 4  # a profile without the reading: all cores, as before


def test_loader_tune_predicts_from_idle_cores_and_charges_the_model_on_cpu():
    start, two = Setting(0, None, False, False), Setting(2, 2, False, False)
    # 10 ms to prepare a sample, 10 ms of model: 20 ms serial
    assert predicted_seconds_per_sample(two, 0.010, 0.010, 2) == pytest.approx(0.010)  # "saves 50%"
    # on a CPU whose other work leaves one core, the workers' prepare time is the model's too
    assert predicted_seconds_per_sample(two, 0.010, 0.010, 1, contended=True) == pytest.approx(0.020)
    assert predicted_seconds_per_sample(start, 0.010, 0.010, 1, contended=True) == pytest.approx(0.020)


def test_a_profile_records_the_load_it_met_and_notes_oversubscription(monkeypatch, machine):
    model = torch.nn.Linear(8, 2)
    pipeline = accel.Pipeline(model=model, source=[torch.randn(8) for _ in range(16)], batch_size=4)
    monkeypatch.setattr(contention, "load_average", lambda: 40.0)
    report = accel.profile(pipeline, machine=machine, budget_seconds=1.0)
    found = report.extra["contention"]
    assert found["load_average"] == 40.0 and found["oversubscribed"] is True and found["idle_cores"] == 1
    assert any("oversubscribed: load average 40.0" in note for note in report.extra["notes"])
    monkeypatch.setattr(contention, "load_average", lambda: 0.0)
    quiet = accel.profile(pipeline, machine=machine, budget_seconds=1.0)
    threads_fit = torch.get_num_threads() <= quiet.extra["contention"]["cores"]
    assert threads_fit == (not any("oversubscribed" in note for note in quiet.extra["notes"]))


def test_busy_cores_counts_the_cores_other_work_holds_now(monkeypatch):
    if not Path("/proc/stat").exists() or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs /proc/stat and two usable CPUs")
    burner = "import time\nend = time.time() + 30\nwhile time.time() < end: pass\n"
    burners = [subprocess.Popen([sys.executable, "-c", burner]) for _ in range(2)]
    try:
        time.sleep(0.5)  # both spinning
        held = busy_cores(0.5)
    finally:
        for process in burners:
            process.kill()
            process.wait()
    # two spinning processes hold (nearly) two cores, whatever else the machine runs
    assert held is not None and 1.6 <= held <= len(os.sched_getaffinity(0)) + 0.05
    monkeypatch.setattr(calibration, "_cpu_ticks", lambda cpus: (_ for _ in ()).throw(OSError("no /proc")))
    assert busy_cores(0.01) is None


def test_the_profile_records_the_cores_measured_busy(monkeypatch, machine):
    model = torch.nn.Linear(8, 2)
    pipeline = accel.Pipeline(model=model, source=[torch.randn(8) for _ in range(16)], batch_size=4)
    monkeypatch.setattr(contention, "busy_cores", lambda: 1.75)
    assert accel.profile(pipeline, machine=machine, budget_seconds=1.0).extra["contention"]["busy_cores"] == 1.75
