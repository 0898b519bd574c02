"""`accel verify LOCK`: re-time what a lock kept on this machine; exit 1 when it no longer pays."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from accel.cli.common import console, err_console
from accel.core.budget import MAX_BUDGET_SECONDS

# Exit code when the lock as a whole is no longer faster (2 stays reserved for bad input).
NO_LONGER_PAYS_EXIT = 1


def render_verify(data: dict, out: Console) -> None:
    out.print(Text.assemble(("accel verify ", "title"), (data["lock_path"], "bold"), f"  [{data['target']}]"))
    out.print(Text.assemble("pipeline loaded from ", (data["pipeline_path"], "bold")))
    if data["changed_versions"]:
        out.print(f"[warn]measured then with other versions: {escape('; '.join(data['changed_versions']))}[/]")
    table = Table(
        title=f"Each optimization against the plain pipeline ({data['threads']} threads, interleaved; "
        f"pays when the whole 95% interval is above {data['min_speedup']}x)",
        title_justify="left",
        expand=True,
    )
    table.add_column("optimization", no_wrap=True)
    table.add_column("speedup [95% CI]", justify="right", no_wrap=True)
    table.add_column("verdict", ratio=1)
    for row in [*data["entries"], data["whole"]]:
        speed = "-"
        if row.get("speedup") is not None:
            low, high = row["speedup_ci"]
            speed = f"{row['speedup']:.2f}x [{low:.2f},{high:.2f}]"
        table.add_row(row["optimizer"], speed, Text(row["reason"], style="good" if row["pays"] else "bad"))
    out.print(table)
    recorded = data.get("recorded_speedup")
    was = f" (the lock recorded {recorded:.2f}x)" if recorded else ""
    if not data["entries"]:
        out.print("[muted]the lock keeps no optimization: nothing was timed, nothing to pay for[/]")
    elif data["still_pays"]:
        out.print(f"[good]the lock still pays here{escape(was)}[/]")
    else:
        out.print(f"[bad]the lock no longer pays here{escape(was)}: run accel optimize again[/]")


def verify_command(
    lock: Path = typer.Argument(..., help="accel.lock.yaml (or the folder that holds it)."),
    pipeline: Optional[Path] = typer.Option(
        None, "--pipeline", help="The pipeline file [default: the lock's file name, beside it or its folder]."
    ),
    budget: float = typer.Option(
        30.0, "--budget", min=1.0, max=MAX_BUDGET_SECONDS, help="Seconds to spend on all the timing."
    ),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch/ORT threads on both sides."),
) -> None:
    """Re-time each optimization a lock kept against the plain pipeline; exit 1 when the lock no longer pays."""
    from accel.optimizing.search.verify import verify_lock

    with err_console.status("verifying") as status:
        result = verify_lock(
            lock, pipeline, budget_seconds=budget, threads=threads, progress=lambda message: status.update(message)
        )
    render_verify(result.to_dict(), console)
    if not result.still_pays:
        raise typer.Exit(NO_LONGER_PAYS_EXIT)


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_command)
