"""`accel demo` and `accel examples`: a first run for someone who installed accel from a wheel.

`accel demo` profiles the bundled image pipeline (JPEG decoding dominates it), writing its trace,
JSON and HTML report under ./accel-runs/; `accel demo --list` names the bundled examples and
`accel examples DEST` copies them out to edit and run (accel.core.examples).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from accel.cli.common import console, err_console, escape
from accel.cli.live import LiveProgress
from accel.cli.paths import check_output_paths
from accel.cli.render_profile import render_profile
from accel.core.budget import MAX_BUDGET_SECONDS

RUNS = Path("accel-runs")
DEFAULT_COPY = Path("accel-examples")


def demo_command(
    list_only: bool = typer.Option(False, "--list", help="List the bundled examples and exit."),
    budget: float = typer.Option(10.0, "--budget", min=1.0, max=MAX_BUDGET_SECONDS, help="Seconds to spend measuring."),
) -> None:
    """Profile the bundled image pipeline (writes ./accel-runs/image_pipeline/)."""
    from accel.core.examples import demo_example, list_examples

    if list_only:
        table = Table(title="Bundled examples (accel examples DEST copies them out)", title_justify="left")
        table.add_column("file", no_wrap=True)
        table.add_column("what it shows")
        for listed in list_examples():
            table.add_row(listed.name, listed.summary)
        console.print(table)
        return
    from accel.cli.profile import exit_if_partial
    from accel.profiling.run import profile

    example = demo_example()
    out = RUNS / example.stem
    json_path, html_path = out / "profile.json", out / "report.html"
    check_output_paths({"--trace-dir": out, "--json": json_path, "--html": html_path})
    err_console.print(f"[muted]profiling the bundled example {escape(str(example))}[/]")
    with LiveProgress(err_console, "demo") as live:
        report = profile(
            example, trace_dir=out, json_path=json_path, html_path=html_path, progress=live, budget_seconds=budget
        )
    render_profile(report, console)
    exit_if_partial(report, written=True)
    err_console.print(f"[muted]written to {escape(str(out))}/: profile.json, report.html and the trace[/]")
    err_console.print(
        "[muted]next: accel examples ./my-examples, then accel profile ./my-examples/wide_mlp.py "
        "and accel optimize ./my-examples/conv_net.py[/]"
    )


def examples_command(
    destination: Path = typer.Argument(DEFAULT_COPY, help="Folder to copy the examples into (created)."),
) -> None:
    """Copy the bundled example pipelines into a folder, to read, edit and run."""
    from accel.core.examples import copy_examples

    check_output_paths({"the examples folder": destination})
    copied = copy_examples(destination)
    console.print(f"copied {len(copied)} examples to {escape(str(destination))}/")
    for path in copied:
        console.print(f"  {escape(str(path))}")
    console.print(f"run one: accel profile {escape(str(destination / 'image_pipeline.py'))}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)
    app.command("examples")(examples_command)
