"""`accel profile FILE`: measure a pipeline and name its bottleneck."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from accel.cli.common import cli_errors, console, err_console
from accel.cli.render import render_profile


def profile_command(
    file: Path = typer.Argument(..., help="Pipeline file (.py) or ONNX model (.onnx)."),
    args: Optional[List[str]] = typer.Argument(None, help="Arguments for a script, after --."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON (accel.profile/1)."),
    trace_dir: Optional[Path] = typer.Option(None, "--trace-dir", help="TensorBoard logdir for the trace [default: ./accel-runs/<name>/]."),
    no_trace: bool = typer.Option(False, "--no-trace", help="Skip the torch.profiler trace."),
    budget: float = typer.Option(20.0, "--budget", min=1.0, help="Seconds to spend measuring."),
) -> None:
    """Measure each stage and the machine, and name the bottleneck with evidence."""
    import accel

    with cli_errors():
        trace = None if no_trace else (trace_dir or Path("accel-runs") / file.stem)
        with err_console.status("profiling") as status:
            report = accel.profile(file, args=tuple(args or ()), trace_dir=trace, json_path=json_path,
                                   progress=lambda message: status.update(message), budget_seconds=budget)
        render_profile(report, console)
        if json_path:
            err_console.print(f"[muted]report written to {json_path}[/]")


def register(app: typer.Typer) -> None:
    app.command("profile", context_settings={"allow_extra_args": True})(profile_command)
