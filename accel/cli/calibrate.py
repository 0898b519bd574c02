"""`accel calibrate`: measure this machine's peak bandwidth and FLOP/s again and cache them."""

from __future__ import annotations

from typing import Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from accel.cli.common import console, err_console


def calibrate_command(
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda[:N] [default: cuda if available]."),
    quick: bool = typer.Option(False, "--quick", help="Smaller working set and fewer repeats (less exact)."),
) -> None:
    """Measure peak memory bandwidth and peak GFLOP/s per dtype; cached for `accel profile`."""
    from accel.core.calibration import cache_path, calibrated_machine
    from accel.core.errors import AccelError
    from accel.core.machine import describe_machine

    if device is not None and device != "cpu" and not device.startswith("cuda"):
        raise AccelError(f"unknown device {device!r}", "use --device cpu or --device cuda[:N]")
    try:
        machine = describe_machine(device)
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise AccelError(f"cannot use device {device!r}: {exc}", "use --device cpu, or cuda on a GPU machine") from exc
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err_console, transient=True
    ) as progress:
        task = progress.add_task("calibrating", total=1.0)
        machine = calibrated_machine(
            machine,
            recalibrate=True,
            quick=quick,
            progress=lambda what, done: progress.update(task, description=what, completed=done),
        )
    table = Table(title=f"{machine.device_name} ({machine.device}, {machine.cores} cores)", title_justify="left")
    table.add_column("peak")
    table.add_column("value", justify="right")
    table.add_row("memory bandwidth", f"{machine.peak_bandwidth_gbs:.1f} GB/s")
    for name, gflops in machine.peak_gflops_by_dtype.items():
        table.add_row(f"{name} GEMM", f"{gflops:,.1f} GFLOP/s")
    table.add_row("ridge point (fp32)", f"{machine.ridge_flops_per_byte:.1f} FLOP/byte")
    for level, size in machine.cache_bytes.items():
        table.add_row(f"{level} cache", f"{size / 1024:,.0f} KiB")
    console.print(table)
    err_console.print(f"[muted]cached in {cache_path(machine)}[/]")


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_command)
