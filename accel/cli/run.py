"""`accel run SCRIPT --lock LOCK [-- args]`: run a training script with the DataLoader settings
`accel optimize SCRIPT` kept (production re-application; the script file is not changed)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from accel.cli.common import err_console, escape


def run_command(
    file: Path = typer.Argument(..., help="The training script (.py) the lock was written for."),
    args: Optional[List[str]] = typer.Argument(None, help="Arguments for the script, after --."),
    lock: Path = typer.Option(..., "--lock", help="accel.lock.yaml written by accel optimize SCRIPT (or its folder)."),
    force: bool = typer.Option(False, "--force", help="Apply the lock even if the script changed since."),
    threads: Optional[int] = typer.Option(
        None, "--threads", min=1, help="torch intra-op threads [default: what the lock was measured at]."
    ),
) -> None:
    """Run a script as __main__ with the DataLoader settings a script lock keeps."""
    from accel.optimizing.script_loader import as_script, run_with_lock

    setting, created, count = run_with_lock(as_script(file, tuple(args or ())), lock, force=force, threads=threads)
    applied = setting.label() if setting is not None else "the script's own settings (the lock kept none)"
    err_console.print(f"[muted]accel run: {escape(applied)} on {len(created)} DataLoader(s), {count} torch threads[/]")


def register(app: typer.Typer) -> None:
    app.command("run", context_settings={"allow_extra_args": True})(run_command)
