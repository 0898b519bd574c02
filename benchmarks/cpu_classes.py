"""`python -m benchmarks cpu_classes`: which optimizers help on which CPU class, and by how much.

For each CPU class this machine can run (its own, and the AVX2 class emulated on an AVX-512 CPU), a
fresh process (the variables that pick kernels must be set before torch is imported) measures
1. the cure kernels' rates as calibration takes them (accel.core.calibration: GFLOP/s and x the
   eager float32 Linear), and
2. on a few corpus models, each single action the optimizers take, applied alone through the
   optimizer registry and timed interleaved against the plain model at THREADS threads (the engine's
   comparison: ratio of median latencies of one forward on the example batch, 95% bootstrap
   interval), with its fidelity: the guard's worst centered cosine against the plain outputs.
The parent prints both as tables, optimizer x model x class.

What the emulation restricts: torch's own kernels (ATEN_CPU_CAPABILITY), oneDNN (ONEDNN_MAX_CPU_ISA:
torch's bf16 matmuls, and OpenVINO's CPU plugin, whose oneDNN fork honours it: its Linear runs
brgemm_avx2_f32 under it, brgconv_avx512 without) and MKL's sgemm, torch's float32 Linear
(MKL_ENABLE_INSTRUCTIONS). fbgemm (torch's int8 dynamic) and ONNX Runtime's MLAS pick their kernels
from cpuid and ignore all three: under an emulated class their numbers are still the CPU's own
(AVX-512, VNNI) kernels, marked OWN_DISPATCH_MARK in the tables.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class CpuClass:
    """A CPU class to measure: its label and the variables that restrict this CPU to it."""

    label: str
    env: dict[str, str]
    emulated: bool = False


AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
CLASSES = (CpuClass("native", {}), CpuClass("avx2 emulated", AVX2_ENV, emulated=True))
# Every model timed at this many intra-op threads (torch's and each runtime's), the dev machine's cores.
THREADS = 2
# (label, file): small enough that two classes take ~10 minutes on a loaded 2-core machine.
MODELS = (
    ("bert_padded", "tests/real/bert_padded.py"),
    ("resnet_classifier", "tests/real/resnet_classifier.py"),
    ("vit_classifier", "tests/real/vit_classifier.py"),
    ("wide_mlp", "examples/wide_mlp.py"),
)
# The single actions whose help depends on the CPU's instruction set (openvino.* where importable).
ACTIONS = (
    "precision.bf16",
    "quantize.int8_dynamic",
    "onnx.runtime",
    "onnx.int8_dynamic",
    "openvino.runtime",
    "openvino.int8",
)
OPTIONAL_MODULES = {"openvino.runtime": "openvino", "openvino.int8": "nncf"}
# Kernels and actions whose library dispatches on cpuid, whatever the variables say.
OWN_DISPATCH = frozenset(
    {"int8_dynamic_fbgemm", "ort_fp32", "ort_int8", "quantize.int8_dynamic", "onnx.runtime", "onnx.int8_dynamic"}
)
OWN_DISPATCH_MARK = "*"
# Marks an action accel's own applicable() would not try on this class (timed anyway, to check it).
SKIPPED_BY_ACCEL_MARK = "!"
# Seconds of interleaved rounds per action (the engine's own comparison; at least its min rounds).
COMPARE_SECONDS = 4.0
WORKER_TIMEOUT_SECONDS = 900
RESULT_PREFIX = "CPU_CLASSES_RESULT "


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """What one class's process measures."""

    quick: bool = False
    models: tuple[tuple[str, str], ...] = MODELS
    actions: tuple[str, ...] = ACTIONS
    compare_seconds: float = COMPARE_SECONDS


def class_env(base: dict[str, str], cpu_class: CpuClass) -> dict[str, str]:
    """`base` (the parent's environment) without any restricting variable it carries, plus the class's."""
    env = {k: v for k, v in base.items() if k not in AVX2_ENV}
    env.update(cpu_class.env)
    return env


def worker_command(spec: WorkerSpec) -> list[str]:
    return [sys.executable, "-m", "benchmarks.cpu_classes", json.dumps(dataclasses.asdict(spec))]


def parse_spec(text: str) -> WorkerSpec:
    """The WorkerSpec worker_command wrote as JSON (lists back to tuples)."""
    given = json.loads(text)
    return WorkerSpec(
        quick=bool(given["quick"]),
        models=tuple((str(label), str(file)) for label, file in given["models"]),
        actions=tuple(given["actions"]),
        compare_seconds=float(given["compare_seconds"]),
    )


def run_class(cpu_class: CpuClass, spec: WorkerSpec, timeout: float = WORKER_TIMEOUT_SECONDS) -> dict[str, Any]:
    """One class measured in a fresh process: its result, or {"error": why}. Progress goes to stderr."""
    try:
        done = subprocess.run(
            worker_command(spec),
            cwd=ROOT,
            env=class_env(dict(os.environ), cpu_class),
            stdout=subprocess.PIPE,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        return {"error": f"exit {done.returncode}, no result"}
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


# --- in the class's own process ------------------------------------------------------------------
def _say(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def measure_calibration(quick: bool) -> tuple[Any, dict[str, Any]]:
    """The calibrated machine (not cached: the user's cache stays as it is) and its cure-kernel figures."""
    from accel.core.calibration import calibrate
    from accel.core.machine import describe_machine

    machine = describe_machine("cpu")
    calibration = calibrate(machine, quick=quick)
    machine = calibration.apply(machine)
    return machine, {
        "cpu_class": machine.cpu_class,
        "capability": machine.cpu_capability,
        "device_name": machine.device_name,
        "isa_flags": list(machine.isa_flags),
        "gflops": calibration.cure_gflops,
        "rows": calibration.cure_rows,
        "unavailable": calibration.cure_unavailable,
        "load_average": calibration.load_average,
        "noise_reason": calibration.noise_reason,
        "seconds": calibration.seconds,
    }


def measure_action(baseline: Any, name: str, machine: Any, workdir: Path, seconds: float) -> dict[str, Any]:
    """`name` applied alone to `baseline` (even where accel's applicable() says no, which is noted),
    timed interleaved against it, and its worst centered cosine against the plain outputs."""
    from accel.optimizing.optimizers import OPTIMIZERS, Context, make_config
    from accel.optimizing.recipes.schema import Guard
    from accel.optimizing.search.measuring import Measurer, compare_pipelines
    from accel.optimizing.search.validation import Validator

    optimizer = OPTIMIZERS.get(name)
    workdir.mkdir(parents=True, exist_ok=True)
    context = Context(machine=machine, workdir=workdir)
    reason = optimizer.applicable(baseline, context)
    try:
        candidate = optimizer.apply(baseline, make_config(optimizer, {}), context).pipeline
        fidelity = Validator(baseline, per_sample_results=False).check(candidate, Guard())
        comparison = compare_pipelines(Measurer(baseline, "latency"), baseline, candidate, seconds)
    except Exception as exc:  # noqa: BLE001 - an action that cannot run here is reported, not fatal
        return {"note": f"n/a: {reason}" if reason else f"failed: {type(exc).__name__}: {str(exc)[:80]}"}
    return {
        "speedup": comparison.speedup,
        "ci": list(comparison.speedup_ci),
        "cosine": fidelity.cosine,
        "accel_skips": reason,
    }


def measure_models(spec: WorkerSpec, machine: Any) -> list[dict[str, Any]]:
    import importlib.util

    import accel

    actions = [a for a in spec.actions if importlib.util.find_spec(OPTIONAL_MODULES.get(a, "accel")) is not None]
    rows = []
    with tempfile.TemporaryDirectory(prefix="accel-cpu-classes-") as folder:
        for model, file in spec.models:
            baseline = accel.load(ROOT / file)
            for name in actions:
                _say(f"{model}: {name}")
                got = measure_action(baseline, name, machine, Path(folder) / model / name, spec.compare_seconds)
                rows.append({"model": model, "optimizer": name, **got})
    return rows


def worker(spec: WorkerSpec) -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    began = os.getloadavg()[0]
    _say("calibrating the cure kernels")
    machine, calibration = measure_calibration(spec.quick)
    actions = measure_models(spec, machine) if spec.models else []
    return {"calibration": calibration, "actions": actions, "load_average": [began, os.getloadavg()[0]]}


# --- rendering, in the parent ----------------------------------------------------------------------
def _marked(text: str, key: str, cpu_class: CpuClass) -> str:
    return text + (OWN_DISPATCH_MARK if cpu_class.emulated and key in OWN_DISPATCH else "")


def calibration_cell(result: dict[str, Any], kernel: str, cpu_class: CpuClass) -> str:
    calibration = result["calibration"]
    rate, baseline = calibration["gflops"].get(kernel), calibration["gflops"].get("fp32_linear")
    if rate is None:
        return "n/a" if kernel in calibration["unavailable"] else "-"
    return _marked(f"{rate:,.1f} ({rate / baseline:.2f}x)" if baseline else f"{rate:,.1f}", kernel, cpu_class)


def action_cell(row: dict[str, Any] | None, cpu_class: CpuClass) -> str:
    if row is None:
        return "-"
    if "speedup" not in row:
        return row["note"][:40]
    low, high = row["ci"]
    mark = SKIPPED_BY_ACCEL_MARK if row["accel_skips"] else ""
    text = f"{row['speedup']:.2f}x [{low:.2f}, {high:.2f}] cos {row['cosine']:.4f}{mark}"
    return _marked(text, row["optimizer"], cpu_class)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [" | ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in [header, *rows]]


Results = dict[str, dict[str, Any]]  # class label -> what its process returned


def calibration_table(results: Results, measured: list[CpuClass], headers: list[str]) -> list[str]:
    calibrations = [results[c.label]["calibration"] for c in measured]
    kernels = dict.fromkeys(k for cal in calibrations for k in [*cal["gflops"], *cal["unavailable"]])
    rows = [[k, *(calibration_cell(results[c.label], k, c) for c in measured)] for k in kernels]
    return ["", "cure kernels, GFLOP/s (x fp32_linear), rows x 768 -> 3072 Linear:", *table(["kernel", *headers], rows)]


def action_table(results: Results, measured: list[CpuClass], headers: list[str]) -> list[str]:
    by_key = {(c.label, r["model"], r["optimizer"]): r for c in measured for r in results[c.label]["actions"]}
    pairs = sorted({(optimizer, model) for _, model, optimizer in by_key})
    rows = [[o, m, *(action_cell(by_key.get((c.label, m, o)), c) for c in measured)] for o, m in pairs]
    if not rows:
        return []
    title = f"single actions, speedup of one forward [95% CI] and worst centered cosine, {THREADS} threads:"
    return ["", title, *table(["optimizer", "model", *headers], rows)]


def footnotes(results: Results, measured: list[CpuClass]) -> list[str]:
    lines = []
    for c in measured:
        calibration, load = results[c.label]["calibration"], results[c.label]["load_average"]
        noisy = f"; calibration noisy: {calibration['noise_reason']}" if calibration["noise_reason"] else ""
        lines.append(
            f"{c.label}: torch kernels {calibration['capability']}, load average {load[0]:.1f} -> {load[1]:.1f}{noisy}"
        )
    return lines + [
        f"{OWN_DISPATCH_MARK} fbgemm / ONNX Runtime MLAS dispatch on cpuid and ignore {', '.join(AVX2_ENV)}: "
        "under an emulated class these are still the CPU's own (AVX-512, VNNI) kernels, not that class's "
        "(OpenVINO's oneDNN fork honours ONEDNN_MAX_CPU_ISA: its numbers are the class's)",
        f"{SKIPPED_BY_ACCEL_MARK} accel's applicable() would not try it on this class (timed anyway)",
    ]


def render(results: Results, classes: tuple[CpuClass, ...] = CLASSES) -> list[str]:
    """The calibration table (kernel x class), the action table (optimizer x model x class) and
    what each class ran at; a class whose process failed is named with why."""
    failed = [f"{c.label}: {results[c.label]['error']}" for c in classes if "error" in results.get(c.label, {})]
    measured = [c for c in classes if "calibration" in results.get(c.label, {})]
    if not measured:
        return failed
    headers = [f"{c.label} ({results[c.label]['calibration']['cpu_class']})" for c in measured]
    return [
        *failed,
        *calibration_table(results, measured, headers),
        *action_table(results, measured, headers),
        *footnotes(results, measured),
    ]


def main() -> None:
    from accel.core.machine import cpu_model_name

    load = os.getloadavg()[0]
    print(f"{cpu_model_name()}, {os.cpu_count()} cores, {datetime.date.today()}, load average {load:.1f} at start")
    results = {}
    for cpu_class in CLASSES:
        print(f"measuring {cpu_class.label} {' '.join(f'{k}={v}' for k, v in cpu_class.env.items())}", flush=True)
        results[cpu_class.label] = run_class(cpu_class, WorkerSpec())
    print("\n".join(render(results)))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    print(RESULT_PREFIX + json.dumps(worker(parse_spec(sys.argv[1]))), flush=True)
