"""What must hold on any CPU class: the calibration follows the kernels torch really runs, and a
lower precision is recommended only where that run's calibration timed its cure kernel faster.

The AVX2 class is emulated on a newer CPU with ATEN_CPU_CAPABILITY=avx2 and ONEDNN_MAX_CPU_ISA=AVX2
(torch's and oneDNN's kernels restricted; /proc/cpuinfo still lists the CPU's own flags).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.profiling.analyzers.recorded import PLANTED

AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
LOWER_PRECISION = {"precision.bf16": "bf16", "precision.fp16": "fp16", "quantize.int8_dynamic": "int8"}

PROFILE_AND_SAY = """
import json, sys
import accel
from accel.core.calibration import calibrated_machine
from accel.core.machine import describe_machine
from accel.profiling.cure_units import CURE_DTYPES, CURE_MIN_SPEEDUP

machine = calibrated_machine(describe_machine("cpu"), quick=True)
report = accel.profile(sys.argv[1], machine=machine, budget_seconds=4.0)
print(json.dumps({
    "cpu_class": machine.cpu_class,
    "capability": machine.cpu_capability,
    "speedups": {name: (machine.cure_speedup(name) or (0.0, ""))[0] for name in CURE_DTYPES},
    "min_speedup": CURE_MIN_SPEEDUP,
    "recommendations": [r for f in report.findings for r in f.recommendations],
    "timed": [t["dtype"] for t in report.extra.get("dtype_timings", [])],
}))
"""


def profile_at(env_extra: dict[str, str], cache: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in AVX2_ENV}
    env.update(env_extra, ACCEL_CACHE_DIR=cache)
    done = subprocess.run(
        [sys.executable, "-c", PROFILE_AND_SAY, str(PLANTED / "hw_conv_net.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("restricted", [True, False], ids=["avx2", "native"])
def test_recommendations_follow_the_calibrated_cure_kernels(restricted, tmp_path):
    said = profile_at(AVX2_ENV if restricted else {}, str(tmp_path / "cache"))
    if restricted:
        assert said["cpu_class"] == "avx2" and said["capability"] == "AVX2"
    for cure, dtype in LOWER_PRECISION.items():
        if cure in said["recommendations"]:
            assert said["speedups"][dtype] >= said["min_speedup"], said
    for dtype in said["timed"]:
        assert dtype == "fp32" or said["speedups"][dtype] >= said["min_speedup"], said
