"""`accel optimize FILE --recipe NAME|PATH`: make a pipeline faster by measurement; `accel recipes`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from accel.cli.common import INTERRUPTED_EXIT, console, err_console, exit_interrupted, state
from accel.cli.live import LiveProgress, shares_terminal
from accel.cli.paths import check_output_paths
from accel.cli.render_optimize import decided_row, render_optimize, steps_table
from accel.cli.units import format_seconds
from accel.core.budget import MAX_BUDGET_SECONDS

__all__ = ["optimize_command", "recipes_command", "register", "render_optimize", "steps_table"]


def optimize_command(
    file: Path = typer.Argument(..., help="Pipeline file (.py), or a training script."),
    args: Optional[List[str]] = typer.Argument(None, help="Arguments for a script, after --."),
    recipe: str = typer.Option(
        "default", "--recipe", "-r", help="Recipe name (see accel recipes) or path to a .yaml recipe."
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Folder for accel.lock.yaml and artifacts [default: ./accel-runs/<name>/optimize]."
    ),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the result as JSON (accel.optimize/1)."),
    budget: Optional[float] = typer.Option(
        None, "--budget", min=1.0, max=MAX_BUDGET_SECONDS, help="Seconds to spend [default: the recipe's]."
    ),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="torch/ORT threads on both sides [default: torch's]."
    ),
    passes: Optional[int] = typer.Option(
        None,
        "--passes",
        min=1,
        help="Passes the pipeline will run; one-time costs are spread over them [default: the recipe's].",
    ),
    as_script: bool = typer.Option(
        False,
        "--script",
        help="Run the file as a training script (tune its DataLoaders) even if it defines a pipeline.",
    ),
    only: Optional[List[str]] = typer.Option(
        None, "--only", help="Try only these optimizers of the recipe's (NAME[,NAME]; see accel recipes)."
    ),
    skip: Optional[List[str]] = typer.Option(
        None, "--skip", help="Leave these optimizers out of the recipe's (NAME[,NAME])."
    ),
) -> None:
    """Try the recipe's optimizations, keep what is faster beyond noise and faithful, write a lock."""
    from accel.optimizing.run import optimize

    out_dir = out or Path("accel-runs") / file.stem / "optimize"
    check_output_paths({"--out": out_dir, "--json": json_path})
    live = LiveProgress(err_console, "optimize", budget_seconds=budget, render_row=decided_row, unit="candidate")
    try:
        with live:
            result = optimize(
                file,
                recipe,
                out_dir=out_dir,
                json_path=json_path,
                budget_seconds=budget,
                threads=threads,
                passes=passes,
                progress=live,
                args=tuple(args or ()),
                as_script=as_script,
                only=only,
                skip=skip,
            )
    except KeyboardInterrupt:  # the search keeps its decided rows itself: this is before it decided any
        if live.rows:
            raise
        exit_interrupted(f"while {live.phase}: nothing was decided yet, no lock written")
    data = result.to_dict()
    shown = shares_terminal(console, err_console) and len(live.rows) == len(data["steps"]) > 0
    render_optimize(data, console, steps_shown=shown)
    if json_path and not state.json_to_stdout:
        err_console.print(f"[muted]result written to {escape(str(json_path))}[/]")
    if getattr(result, "partial", False):
        by = state.signal_name or "Ctrl-C"
        err_console.print(f"[error]interrupted:[/] stopped by {by}; the rows decided so far are above")
        raise typer.Exit(INTERRUPTED_EXIT)


def recipes_command() -> None:
    """List the built-in recipes and the optimizers they can use."""
    from accel.optimizing.optimizers import OPTIMIZERS
    from accel.optimizing.recipes import builtin_recipes

    table = Table(title="Recipes (accel optimize FILE --recipe NAME)", title_justify="left", expand=True)
    table.add_column("recipe")
    table.add_column("target")
    table.add_column("budget", justify="right")
    table.add_column("description", ratio=1)
    for item in builtin_recipes():
        table.add_row(item.name, item.target, format_seconds(item.budget_seconds), escape(item.description))
    console.print(table)
    optimizers = Table(title="Optimizers", title_justify="left", expand=True)
    optimizers.add_column("optimizer")
    optimizers.add_column("description", ratio=1)
    for name, optimizer in OPTIMIZERS.items():
        optimizers.add_row(name, escape(optimizer.description))
    console.print(optimizers)


def register(app: typer.Typer) -> None:
    app.command("optimize", context_settings={"allow_extra_args": True})(optimize_command)
    app.command("recipes")(recipes_command)
