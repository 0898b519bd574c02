"""`accel calibrate`: measure this machine's peak bandwidth and FLOP/s again and cache them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from accel.cli.common import console, err_console
from accel.cli.paths import check_output_paths

if TYPE_CHECKING:
    from accel.core.calibration import Calibration
    from accel.core.machine import Machine


def calibrate_command(
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda[:N] [default: cuda if available]."),
    quick: bool = typer.Option(False, "--quick", help="Smaller working set and fewer repeats (less exact)."),
) -> None:
    """Measure peak memory bandwidth, peak GFLOP/s per dtype and the cures' kernels; cached for `accel profile`."""
    from accel.core.calibration import cache_path, calibrate_and_cache
    from accel.core.errors import AccelError
    from accel.core.io import cache_root
    from accel.core.machine import describe_machine

    check_output_paths({"the calibration cache": cache_root()})

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
        calibration = calibrate_and_cache(
            machine, quick=quick, progress=lambda what, done: progress.update(task, description=what, completed=done)
        )
    machine = calibration.apply(machine)
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
    console.print(_cure_table(calibration))
    _print_noise(calibration, machine)
    err_console.print(f"[muted]cached in {cache_path(machine)}[/]")


def _cure_table(calibration: Calibration) -> Table:
    from accel.core.cure_kernels import BASELINE_KERNEL, KERNELS, LAYER_IN, LAYER_OUT

    baseline = calibration.cure_gflops.get(BASELINE_KERNEL)
    table = Table(title=f"the cures' kernels (rows x {LAYER_IN} -> {LAYER_OUT} Linear)", title_justify="left")
    table.add_column("kernel")
    table.add_column("cure")
    table.add_column("rows", justify="right")
    table.add_column("GFLOP/s", justify="right")
    table.add_column("x fp32", justify="right")
    for name, gflops in calibration.cure_gflops.items():
        kernel = KERNELS.get(name)
        ratio = f"{gflops / baseline:.2f}x" if baseline else ""
        cure = (kernel.cure or "(baseline)") if kernel else ""
        table.add_row(name, cure, str(calibration.cure_rows.get(name, "")), f"{gflops:,.1f}", ratio)
    return table


def _print_noise(calibration: Calibration, machine: Machine) -> None:
    for name, why in calibration.cure_unavailable.items():
        console.print(f"[muted]{name} unavailable: {why}[/]")
    worst = max(calibration.spreads, key=lambda name: calibration.spreads[name], default=None)
    share = calibration.cpu_share
    load = "n/a" if calibration.load_average is None else f"{calibration.load_average:.2f}"
    console.print(
        f"CPU class {machine.cpu_class}: {' '.join(machine.isa_flags) or 'flags unknown'}"
        f" (torch kernels: {machine.cpu_capability or 'n/a'})"
    )
    console.print(
        f"noise: worst spread {calibration.spread:.1%}"
        + (f" ({worst})" if worst else "")
        + (f", CPU share {share:.0%}" if share is not None else "")
        + f", load average {load} on {calibration.cores} cores; took {calibration.seconds:.1f} s"
    )
    if calibration.noisy:
        console.print(
            f"[warn]noisy: {calibration.noise_reason}.[/] Cached flagged noisy; measured again when the "
            "machine is quiet (run `accel calibrate` then)."
        )


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_command)
