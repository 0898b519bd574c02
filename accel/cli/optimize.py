"""`accel optimize FILE --recipe NAME|PATH`: make a pipeline faster by measurement; `accel recipes`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from accel.cli.common import console, err_console
from accel.cli.paths import check_output_paths
from accel.cli.units import format_bytes, format_seconds
from accel.optimizing.decision import Verdict

VERDICT_STYLES = {
    Verdict.ACCEPTED: "good",
    Verdict.REVERTED: "bad",
    Verdict.FAILED: "bad",
    Verdict.NOT_APPLICABLE: "muted",
    Verdict.SKIPPED: "muted",
}
VERDICT_LABELS = {Verdict.NOT_APPLICABLE: "n/a"}


def _verdict(value: str) -> Text:
    verdict = Verdict(value)
    return Text(VERDICT_LABELS.get(verdict, verdict.value), style=VERDICT_STYLES[verdict])


def _speedup(step: dict) -> str:
    if step.get("speedup") is None:
        return "-"
    low, high = step["speedup_ci"]
    return f"{step['speedup']:.2f}x [{low:.2f},{high:.2f}]"


def _fidelity(step: dict) -> str:
    fidelity = step.get("fidelity")
    if not fidelity:
        return "-"
    if fidelity.get("batches"):  # a script's DataLoader setting: its batches against the script's own
        return str(fidelity["batches"])
    if fidelity.get("shape_error"):
        return "shape differs"
    if fidelity.get("note"):
        return "not validated"
    if fidelity.get("nonfinite"):
        return "NaN/inf"
    if fidelity.get("exact_mismatch"):
        return "exact differs"
    parts = []
    if fidelity.get("cosine") is not None:
        parts.append(f"cos {fidelity['cosine']:.5f}")  # the worst sample's
    if fidelity.get("top1_agreement") is not None and fidelity["top1_agreement"] < 1.0:  # only when labels moved
        parts.append(f"top1 {fidelity['top1_agreement'] * 100:.0f}%")
    if fidelity.get("metric_drop") is not None:
        parts.append(f"metric {-fidelity['metric_drop'] * 100:+.2f}%")
    return " ".join(parts) or "-"


def steps_table(data: dict) -> Table:
    table = Table(
        title=f"Candidates (recipe {data['recipe']}, target {data['objective']}, {data['threads']} threads; "
        + (
            "each script run interleaved with the script as written)"
            if data.get("mode") == "script"
            else "each measured interleaved against the current best)"
        ),
        title_justify="left",
        expand=True,
    )
    show_memory = any(step.get("memory_ratio") is not None for step in data["steps"])
    table.add_column("optimizer", no_wrap=True)
    table.add_column("speedup [95% CI]", justify="right", no_wrap=True)
    predicted = {
        **(data.get("predicted_speedup") or {}),
        **{s["optimizer"]: s["predicted_speedup"] for s in data["steps"] if s.get("predicted_speedup") is not None},
    }
    if predicted:
        table.add_column("predicted", justify="right", no_wrap=True)
    if show_memory:
        table.add_column("memory", justify="right", no_wrap=True)
    table.add_column("fidelity", justify="right", no_wrap=True)
    table.add_column("one-time", justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("reason", ratio=1)
    for step in data["steps"]:
        one_time = (
            format_seconds(step["setup_seconds"] + (step.get("first_call_seconds") or 0.0))
            if step.get("speedup") is not None
            else "-"
        )
        row = [step["optimizer"], _speedup(step)]
        if predicted:
            row.append(f"{predicted[step['optimizer']]:.2f}x" if step["optimizer"] in predicted else "-")
        if show_memory:
            row.append(f"x{step['memory_ratio']:.2f}" if step.get("memory_ratio") is not None else "-")
        row += [_fidelity(step), one_time]
        table.add_row(
            *row,
            _verdict(step["verdict"]),
            escape(step["reason"]),
        )
    return table


def render_script_summary(data: dict, out: Console) -> None:
    """The lines under a script's candidates table: samples/s before and after, the lock."""
    base, final = data["baseline"]["samples_per_s"], data["final"]["samples_per_s"]
    if base is not None and final is not None:
        low, high = data["speedup_ci"]
        out.print(
            f"as written {base:,.1f} samples/s, final {final:,.1f} samples/s (per pass over the loader, start-up included, "
            f"{data['rounds']} interleaved rounds): [bold]{data['speedup']:.2f}x[/] [{low:.2f}, {high:.2f}]"
        )
    style = "good" if data["kept"] else "warn"
    out.print(f"[{style}]{escape(data['message'])}[/]")
    if data.get("lock_path"):
        out.print(
            f"[muted]lock: {escape(data['lock_path'])}  (accel run {escape(data['target'])}.py "
            f"--lock {escape(data['lock_path'])} re-applies it)[/]"
        )


def render_optimize(data: dict, out: Console) -> None:
    out.print(
        Text.assemble(
            ("accel optimize ", "title"),
            (data["target"], "bold"),
            f"  [recipe {data['recipe']}]",
            ("  " + data["objective"], "muted"),
        )
    )
    if data.get("mode") == "script":
        if data["steps"]:
            out.print(steps_table(data))
        render_script_summary(data, out)
        return
    out.print(steps_table(data))
    base, final = data["baseline"], data["final"]
    unit = "per call" if data["objective"] != "throughput" else f"per pass ({base['samples_per_call']} samples)"
    line = (
        f"baseline {format_seconds(base['median_seconds'])} {unit}, final {format_seconds(final['median_seconds'])}: "
        f"[bold]{data['speedup']:.2f}x[/] [{data['speedup_ci'][0]:.2f}, {data['speedup_ci'][1]:.2f}]"
    )
    if base.get("samples_per_s") and final.get("samples_per_s"):
        line += f"  ({base['samples_per_s']:,.1f} -> {final['samples_per_s']:,.1f} samples/s)"
    out.print(line)
    if base.get("peak_bytes") is not None and final.get("peak_bytes") is not None:
        out.print(f"peak memory {format_bytes(base['peak_bytes'])} -> {format_bytes(final['peak_bytes'])}")
    style = "good" if data["kept"] else "warn"
    out.print(f"[{style}]{escape(data['message'])}[/]")
    if data.get("lock_path"):
        out.print(f"[muted]lock: {escape(data['lock_path'])}  (accel.load(FILE, lock=...) re-applies it)[/]")


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
    budget: Optional[float] = typer.Option(None, "--budget", min=1.0, help="Seconds to spend [default: the recipe's]."),
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
    with err_console.status("optimizing") as status:
        result = optimize(
            file,
            recipe,
            out_dir=out_dir,
            json_path=json_path,
            budget_seconds=budget,
            threads=threads,
            passes=passes,
            progress=lambda message: status.update(message),
            args=tuple(args or ()),
            as_script=as_script,
            only=only,
            skip=skip,
        )
    render_optimize(result.to_dict(), console)
    if json_path:
        err_console.print(f"[muted]result written to {escape(str(json_path))}[/]")


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
