"""`accel profile FILE`: measure a pipeline and name its bottleneck."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from accel.cli.common import console, err_console
from accel.cli.render import render_profile


def profile_command(
    file: Path = typer.Argument(..., help="Pipeline file (.py) or ONNX model (.onnx)."),
    args: Optional[List[str]] = typer.Argument(None, help="Arguments for a script, after --."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON (accel.profile/1)."),
    trace_dir: Optional[Path] = typer.Option(
        None, "--trace-dir", help="TensorBoard logdir for the trace [default: ./accel-runs/<name>/]."
    ),
    no_trace: bool = typer.Option(False, "--no-trace", help="Skip the torch.profiler trace."),
    budget: float = typer.Option(20.0, "--budget", min=1.0, help="Seconds to spend measuring."),
    html_path: Optional[Path] = typer.Option(
        None, "--html", help="Write a self-contained HTML report (roofline chart)."
    ),
    dynamic_dim: Optional[List[str]] = typer.Option(
        None, "--dynamic-dim", help="ONNX: NAME=VALUE for a dynamic input dimension (repeatable)."
    ),
    as_script: bool = typer.Option(
        False, "--script", help="Run the file as a script (as __main__) even if it defines model or pipeline."
    ),
) -> None:
    """Measure each stage and the machine, and name the bottleneck with evidence."""
    from accel.profiling.onnx import parse_dynamic_dims
    from accel.profiling.run import profile

    dims = parse_dynamic_dims(dynamic_dim or [])
    trace = None if no_trace else (trace_dir or Path("accel-runs") / file.stem)
    with err_console.status("profiling") as status:
        report = profile(
            file,
            args=tuple(args or ()),
            trace_dir=trace,
            json_path=json_path,
            progress=lambda message: status.update(message),
            budget_seconds=budget,
            html_path=html_path,
            dynamic_dims=dims,
            as_script=as_script,
        )
    render_profile(report, console)
    if json_path:
        err_console.print(f"[muted]report written to {json_path}[/]")
    if html_path:
        err_console.print(f"[muted]HTML report written to {html_path}[/]")


def register(app: typer.Typer) -> None:
    app.command("profile", context_settings={"allow_extra_args": True})(profile_command)
