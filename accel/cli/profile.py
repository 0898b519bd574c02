"""`accel profile FILE`: measure a pipeline and name its bottleneck."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from accel.cli.common import INTERRUPTED_EXIT, console, err_console, escape, state
from accel.cli.live import LiveProgress
from accel.cli.paths import check_output_paths
from accel.cli.render_profile import render_profile
from accel.core.budget import MAX_BUDGET_SECONDS
from accel.core.errors import PipelineLoadError
from accel.profiling.report import Report


def profile_command(
    file: Optional[Path] = typer.Argument(None, help="Pipeline file (.py) or ONNX model (.onnx)."),
    args: Optional[List[str]] = typer.Argument(None, help="Arguments for a script, after --."),
    json_path: Optional[Path] = typer.Option(
        None, "--json", help="Write the report as JSON (accel.profile/1); - writes it to stdout."
    ),
    trace_dir: Optional[Path] = typer.Option(
        None, "--trace-dir", help="TensorBoard logdir for the trace [default: ./accel-runs/<name>/]."
    ),
    no_trace: bool = typer.Option(False, "--no-trace", help="Skip the torch.profiler trace."),
    budget: float = typer.Option(
        20.0,
        "--budget",
        min=1.0,
        max=MAX_BUDGET_SECONDS,
        help="Seconds to spend measuring (start-up and calibration aside); each pass gets a share, "
        "at least one model call, and the report says which passes were cut short.",
    ),
    html_path: Optional[Path] = typer.Option(
        None, "--html", help="Write a self-contained HTML report (roofline chart)."
    ),
    dynamic_dim: Optional[List[str]] = typer.Option(
        None, "--dynamic-dim", help="ONNX: NAME=VALUE for a dynamic input dimension (repeatable)."
    ),
    as_script: bool = typer.Option(
        False, "--script", help="Run the file as a script (as __main__) even if it defines model or pipeline."
    ),
    nproc_per_node: Optional[int] = typer.Option(
        None, "--nproc-per-node", min=1, help="Run the script on N local ranks under torchrun; name any straggler."
    ),
    traces: Optional[Path] = typer.Option(
        None, "--traces", help="Read per-rank torch.profiler traces (a job's logdir) instead of running anything."
    ),
) -> None:
    """Measure each stage and the machine, and name the bottleneck with evidence."""
    trace = None if no_trace else (trace_dir or Path("accel-runs") / (file.stem if file else "traces"))
    check_output_paths({"--json": json_path, "--html": html_path, "--trace-dir": trace, **calibration_cache()})
    if traces is not None or nproc_per_node is not None:
        profile_ranks_command(file, args, json_path, html_path, trace_dir, no_trace, nproc_per_node, traces)
        return
    if file is None:
        raise PipelineLoadError("no FILE to profile", "accel profile FILE, or accel profile --traces DIR")
    from accel.profiling.onnx import parse_dynamic_dims
    from accel.profiling.run import profile

    dims = parse_dynamic_dims(dynamic_dim or [])
    with LiveProgress(err_console, "profile") as live:
        report = profile(
            file,
            args=tuple(args or ()),
            trace_dir=trace,
            json_path=json_path,
            progress=live,
            budget_seconds=budget,
            html_path=html_path,
            dynamic_dims=dims,
            as_script=as_script,
        )
    render_profile(report, console)
    print_written(json_path, html_path)
    exit_if_partial(report, written=bool(json_path or html_path))


def exit_if_partial(report: Report, *, written: bool) -> None:
    """A profile stopped by Ctrl-C or SIGTERM (rendered above): one line naming the pass, exit 130."""
    if not report.extra.get("partial"):
        return
    stopped = escape(str(report.extra.get("interrupted_pass", "")))
    by = state.signal_name or "Ctrl-C"
    err_console.print(
        f"[error]interrupted:[/] stopped by {by} during the {stopped} pass; the stages measured so far are "
        "above" + (", the report marked partial" if written else ""),
        soft_wrap=True,
    )
    raise typer.Exit(INTERRUPTED_EXIT)


def calibration_cache() -> dict[str, Path]:
    """The calibration cache folder, to check before a run that will calibrate (none cached yet)."""
    from accel.core.io import cache_root

    root = cache_root()
    return {} if any(root.glob("calibration-*.json")) else {"the calibration cache": root}


def print_written(json_path: Optional[Path], html_path: Optional[Path]) -> None:
    if json_path and not state.json_to_stdout:
        err_console.print(f"[muted]report written to {escape(str(json_path))}[/]")
    if html_path:
        err_console.print(f"[muted]HTML report written to {escape(str(html_path))}[/]")


def profile_ranks_command(
    file: Optional[Path],
    args: Optional[List[str]],
    json_path: Optional[Path],
    html_path: Optional[Path],
    trace_dir: Optional[Path],
    no_trace: bool,
    nproc_per_node: Optional[int],
    traces: Optional[Path],
) -> None:
    """`--nproc-per-node N SCRIPT` (torchrun) or `--traces DIR` (a job's traces): the per-rank report."""
    from accel.profiling.run import profile_ranks, profile_traces, write_html

    if traces is not None:
        if file is not None or nproc_per_node is not None:
            raise PipelineLoadError(
                "--traces reads a folder of traces and runs nothing", "give no FILE and no --nproc-per-node with it"
            )
        with LiveProgress(err_console, "profile (reading traces)") as live:
            report = profile_traces(traces, json_path=json_path, progress=live)
    else:
        if file is None:
            raise PipelineLoadError(
                "--nproc-per-node runs a script: no FILE given", "accel profile --nproc-per-node N SCRIPT"
            )
        trace = None if no_trace else (trace_dir or Path("accel-runs") / file.stem)
        with LiveProgress(err_console, "profile") as live:
            report = profile_ranks(
                file,
                nproc_per_node or 1,
                args=tuple(args or ()),
                trace_dir=trace,
                json_path=json_path,
                progress=live,
                warn=lambda message: err_console.print(f"[warn]warning:[/] {escape(message)}", soft_wrap=True),
            )
    if html_path is not None:
        write_html(report, html_path)
    render_profile(report, console)
    print_written(json_path, html_path)


def register(app: typer.Typer) -> None:
    app.command("profile", context_settings={"allow_extra_args": True})(profile_command)
