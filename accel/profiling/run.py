"""`accel.profile`: load a target, measure it, analyze the measurements, build the report.

Data flows one way: load -> measure -> analyze -> Report. Rendering is the CLI's job.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from accel.core.budget import Deadline
from accel.core.errors import AccelError, PipelineLoadError
from accel.core.io import json_default, write_json_atomic, write_text_atomic
from accel.core.loading import Script, check_file, find_target
from accel.core.machine import Machine, describe_machine
from accel.core.measure import device_sync
from accel.core.pipeline import Pipeline
from accel.core.profiler_notes import quietly
from accel.core.progress import Progress, ProgressEvent, emit, no_progress
from accel.profiling.analyzers import analyze
from accel.profiling.contention import Contention, contention_now, oversubscription_note
from accel.profiling.data import ProfileData
from accel.profiling.partial import PassesInterrupted, ProfileInterrupted, marked_partial
from accel.profiling.report import Report, Stage
from accel.profiling.stages import DEFAULT_BUDGET_SECONDS, measure_pipeline


def build_report(data: ProfileData, machine: Machine, *, trace_dir: str | None = None) -> Report:
    """The report for measured data: stages with shares, findings from every analyzer."""
    total = sum(s.seconds for s in data.stages)
    stages = [
        Stage(
            name=s.name,
            seconds=s.seconds,
            share=(s.seconds / total) if total > 0 else 0.0,
            per_sample_seconds=s.per_sample_seconds,
            samples_per_s=s.samples_per_s if s.seconds > 0 else 0.0,
        )
        for s in data.stages
    ]
    e2e = data.end_to_end
    latency = {}
    if data.model_latency is not None:
        latency = {
            "median_seconds": data.model_latency.median,
            "p90_seconds": data.model_latency.p90,
            "p99_seconds": data.model_latency.p99,
        }
    elif e2e is not None and e2e.batch_seconds:
        ordered = sorted(e2e.batch_seconds)
        latency = {
            "median_seconds": ordered[len(ordered) // 2],
            "p90_seconds": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        }
    extra = dict(data.extra)
    extra.update(hardware_sections(data))
    if e2e is not None:
        extra["end_to_end"] = {
            "seconds": e2e.seconds,
            "samples": e2e.samples,
            "batches": e2e.batches,
            "wait_seconds": e2e.wait_seconds,
            "compute_seconds": e2e.compute_seconds,
            "wait_share": e2e.wait_share,
            "num_workers": e2e.num_workers,
            "startup_seconds": e2e.startup_seconds,
        }
    return Report(
        target=data.target,
        machine=machine,
        stages=stages,
        samples_per_s=e2e.samples_per_s if e2e else 0.0,
        findings=analyze(data, machine),
        latency=latency,
        mode=data.mode,
        trace_dir=trace_dir,
        extra=extra,
    )


def hardware_sections(data: ProfileData) -> dict:
    """The report's ops, layers, cost, memory and generation sections, where those passes ran."""
    from accel.profiling.costmodel import CostModel

    sections: dict = {}
    if isinstance(data.ops, CostModel):
        sections["cost"] = data.ops.to_dict()
        sections["ops"] = [g.to_dict() for g in data.ops.by_op()]
        sections["layers"] = [g.to_dict() for g in data.ops.by_layer()]
    if data.memory is not None:
        sections["memory"] = data.memory.to_dict()
    if data.generation is not None:
        sections["generation"] = data.generation.to_dict()
    if data.dtype_timings:
        sections["dtype_timings"] = [t.to_dict() for t in data.dtype_timings]
    return sections


def profile_pipeline(
    pipeline: Pipeline,
    *,
    machine: Machine | None = None,
    trace_dir: str | os.PathLike | None = None,
    progress: Progress = no_progress,
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
) -> Report:
    """Measure a pipeline within `budget_seconds` (calibration aside), shared by its passes through
    one Deadline; the report's extra["budget"] says what each pass got and which were cut short."""
    machine = machine or describe_machine()
    if not machine.calibrated:
        from accel.core.calibration import calibrated_machine

        progress("calibrating the machine (once per machine and torch version)")
        machine = calibrated_machine(machine, progress=lambda message, fraction: progress(message))
    from accel.profiling.hardware import PASS_WEIGHTS, hardware_passes, start_profiler
    from accel.profiling.trace import TRACED_BATCHES, trace_pipeline

    start_profiler()
    weights = {name: weight for name, weight in PASS_WEIGHTS.items() if name != "generation" or pipeline.generate}
    if trace_dir is None:
        weights.pop("trace")
    deadline = Deadline(budget_seconds, weights)
    # Before this run adds to the load; its 0.1 s wait counts against the budget like any pass.
    contention = contention_now(machine.cores, torch.get_num_threads())
    emit(progress, ProgressEvent("measuring stages", budget_left_seconds=budget_seconds))
    with deadline.run("stages") as budget:
        data = measure_pipeline(pipeline, cores=machine.cores, sync=device_sync(machine.device), budget=budget)
    add_contention(data, contention)
    deadline.call_seconds = model_call_seconds(data)
    trace = None
    try:
        data = hardware_passes(pipeline, data, machine, progress, deadline)
        if trace_dir is not None:
            progress("tracing with torch.profiler")
            with deadline.run("trace") as budget:
                batches = budget.fit(deadline.call_seconds or 0.0, TRACED_BATCHES) if pipeline.has_source else 1
                trace = str(trace_pipeline(pipeline, Path(trace_dir), batches))
                budget.calls += batches
    except KeyboardInterrupt as stop:  # Ctrl-C or SIGTERM once the stages are measured: keep them
        data, stopped = (stop.data, stop.pass_name) if isinstance(stop, PassesInterrupted) else (data, "trace")
        raise ProfileInterrupted(build_report(marked_partial(data, stopped, deadline), machine), stopped) from None
    data.extra["budget"] = deadline.to_dict()
    data.extra["notes"] = [*data.extra.get("notes", []), budget_note(deadline)]
    progress("analyzing")
    return build_report(data, machine, trace_dir=trace)


def add_contention(data: ProfileData, contention: Contention | None) -> None:
    """The load the run met, and a note when its threads had to queue for cores (see .contention)."""
    if contention is None:
        return
    data.extra["contention"] = contention.to_dict()
    note = oversubscription_note(contention)
    if note is not None:
        data.extra["notes"] = [*data.extra.get("notes", []), note]


def model_call_seconds(data: ProfileData) -> float | None:
    """Seconds of one model call as the stage pass measured it (its median, or its mean per batch)."""
    if data.model_latency is not None and data.model_latency.count:
        return data.model_latency.median
    model = next((s for s in data.stages if s.name == "model"), None)
    if model is None or not model.samples or not data.batch_size:
        return None
    return model.seconds / max(-(-model.samples // data.batch_size), 1)


def budget_note(deadline: Deadline) -> str:
    """One line: the budget, what was spent, and each pass cut short with the calls it made."""
    spent = deadline.to_dict()["spent_seconds"]
    line = f"budget {deadline.budget_seconds:g} s, measured for {spent:.1f} s"
    cut = [p for p in deadline.passes if p.cut_short]
    if cut:
        line += "; cut short: " + ", ".join(
            f"{p.name} ({p.calls} call{'s' if p.calls != 1 else ''})" if p.calls else f"{p.name} (not run)" for p in cut
        )
        line += " (a larger --budget measures more calls)"
    return line


def profile_onnx_file(
    path: str | os.PathLike,
    *,
    machine: Machine | None = None,
    dynamic_dims: dict[str, int] | None = None,
    progress: Progress = no_progress,
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
) -> Report:
    from accel.profiling.onnx import profile_onnx

    if not Path(path).is_file():
        raise PipelineLoadError(f"no such ONNX file: {path}", "check the path")
    machine = machine or describe_machine("cpu")
    if not machine.calibrated:
        from accel.core.calibration import calibrated_machine

        progress("calibrating the machine (once per machine and torch version)")
        machine = calibrated_machine(machine, progress=lambda message, fraction: progress(message))
    try:
        data = profile_onnx(path, machine, dynamic_dims=dynamic_dims, progress=progress, budget_seconds=budget_seconds)
    except PassesInterrupted as stop:  # Ctrl-C or SIGTERM once the model was timed: keep the timing
        report = build_report(marked_partial(stop.data, stop.pass_name), machine)
        raise ProfileInterrupted(report, stop.pass_name) from None
    progress("analyzing")
    return build_report(data, machine)


def profile_script(
    script: Script,
    *,
    machine: Machine | None = None,
    trace_dir: str | os.PathLike | None = None,
    progress: Progress = no_progress,
    budget_seconds: float | None = None,
) -> Report:
    """Run a script under accel (its loop ended past `budget_seconds`) and report where it spends time."""
    from accel.profiling.script import measure_script

    machine = machine or describe_machine()
    progress(f"running {script.path.name} as a script")
    trace = Path(trace_dir) if trace_dir is not None else None
    data = measure_script(script, cores=machine.cores, trace_dir=trace, budget_seconds=budget_seconds)
    if data.end_to_end is None and script.incomplete_form:
        from accel.core.loading import MINIMAL_FORM_HINT

        raise PipelineLoadError(
            f"{script.path} {script.incomplete_form}, and run as a script it took no batch from a DataLoader",
            MINIMAL_FORM_HINT,
        )
    if script.note:
        data.extra["notes"] = [*data.extra.get("notes", []), script.note]
    progress("analyzing")
    return build_report(data, machine, trace_dir=str(trace) if trace is not None else None)


@quietly
def profile(
    target: str | os.PathLike | Pipeline,
    *,
    args: tuple[str, ...] = (),
    trace_dir: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
    progress: Progress = no_progress,
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
    machine: Machine | None = None,
    html_path: str | os.PathLike | None = None,
    dynamic_dims: dict[str, int] | None = None,
    as_script: bool = False,
) -> Report:
    """Profile a pipeline file (or a Pipeline) and return the report; optionally write its JSON and HTML.

    `as_script` runs a .py file as a script even when it defines `model` or `pipeline`. Ctrl-C once
    the stages are measured returns what was measured, marked partial (ProfileInterrupted).
    """
    check_budget(budget_seconds)
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):  # seeded for repeatable inputs; the caller's RNG state is put back
        torch.manual_seed(0)
        try:
            report = _profile_target(
                target,
                args=args,
                trace_dir=trace_dir,
                progress=progress,
                budget_seconds=budget_seconds,
                machine=machine,
                dynamic_dims=dynamic_dims,
                as_script=as_script,
            )
        except ProfileInterrupted as stop:  # what was measured, report.extra["partial"] True
            report = stop.report
    if json_path is not None:
        write_json_atomic(json_path, report.to_dict())
    if html_path is not None:
        write_html(report, html_path)
    return report


# The smallest budget, as the CLI's --budget (min=1.0) takes it.
MIN_BUDGET_SECONDS = 1.0


def check_budget(budget_seconds: float | None) -> None:
    """The API's budget checked as the CLI's --budget is: at least one second."""
    if budget_seconds is not None and not budget_seconds >= MIN_BUDGET_SECONDS:
        raise AccelError(
            f"Invalid value for budget_seconds (--budget): {budget_seconds:g}; "
            f"input should be greater than or equal to {MIN_BUDGET_SECONDS:g}",
            "give the seconds to spend, 1 or more",
        )


def _profile_target(
    target: str | os.PathLike | Pipeline,
    *,
    args: tuple[str, ...],
    trace_dir: str | os.PathLike | None,
    progress: Progress,
    budget_seconds: float,
    machine: Machine | None,
    dynamic_dims: dict[str, int] | None,
    as_script: bool,
) -> Report:
    if as_script:
        file = check_file(target)  # type: ignore[arg-type]
        if file.suffix != ".py":
            raise PipelineLoadError(f"{file} is not a Python script", "--script runs a .py file as __main__")
        found: Pipeline | Script = Script(path=file, args=tuple(args))
    elif isinstance(target, Pipeline):
        found = target
    elif str(target).endswith(".onnx"):
        return profile_onnx_file(
            target, machine=machine, dynamic_dims=dynamic_dims, progress=progress, budget_seconds=budget_seconds
        )
    else:
        progress(f"loading {target}")
        found = find_target(target, args)
    if isinstance(found, Script):
        return profile_script(
            found, machine=machine, trace_dir=trace_dir, progress=progress, budget_seconds=budget_seconds
        )
    return profile_pipeline(
        found, machine=machine, trace_dir=trace_dir, progress=progress, budget_seconds=budget_seconds
    )


def write_html(report: Report, path: str | os.PathLike) -> None:
    """The report as one self-contained HTML page."""
    import json

    from accel.profiling.html import render_html

    # Through JSON first, so the page shows exactly what the JSON report holds.
    data = json.loads(json.dumps(report.to_dict(), default=json_default))
    write_text_atomic(path, render_html(data))


def profile_ranks(
    script: str | os.PathLike,
    nproc: int,
    *,
    args: tuple[str, ...] = (),
    trace_dir: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
    machine: Machine | None = None,
    progress: Progress = no_progress,
    warn: Progress = no_progress,
    timeout_seconds: float | None = None,
) -> Report:
    """Run a script on `nproc` local ranks under torchrun and report per rank, naming any straggler.

    The script runs to its end (ranks cannot stop at a budget one by one without hanging the others).
    """
    from accel.profiling.multirank.launch import launch
    from accel.profiling.multirank.merge import job_from_results, multirank_report
    from accel.profiling.ranks import job_profile_data

    file = check_file(script)
    machine = machine or describe_machine()
    progress(f"running {file.name} on {nproc} ranks under torchrun")
    trace = Path(trace_dir) if trace_dir is not None else None
    results = launch(Script(file, tuple(args)), nproc, trace_dir=trace, timeout_seconds=timeout_seconds, warn=warn)
    job = job_from_results(results, file)
    progress("analyzing")
    report = build_report(
        job_profile_data(job, file.stem, machine.cores), machine, trace_dir=str(trace) if trace else None
    )
    report = multirank_report(report, job, {"nproc_per_node": nproc, "backend": results[0]["backend"]})
    if json_path is not None:
        write_json_atomic(json_path, report.to_dict())
    return report


def profile_traces(
    directory: str | os.PathLike,
    *,
    json_path: str | os.PathLike | None = None,
    machine: Machine | None = None,
    progress: Progress = no_progress,
) -> Report:
    """Read the per-rank Kineto traces in a folder (one rank at a time) and report as profile_ranks does."""
    from accel.profiling.multirank.merge import multirank_report
    from accel.profiling.multirank.traces import read_job
    from accel.profiling.ranks import job_profile_data

    folder = Path(directory)
    progress(f"reading traces in {folder}")
    job, details = read_job(folder, progress=progress)
    machine = machine or describe_machine()
    report = build_report(job_profile_data(job, folder.name, machine.cores), machine, trace_dir=str(folder))
    report = multirank_report(report, job, details)
    if json_path is not None:
        write_json_atomic(json_path, report.to_dict())
    return report
