"""`accel bench` and `accel gate`: measure a pipeline in fresh processes, and gate CI on it.

    accel bench FILE [--lock LOCK] [--json PATH] [--save-baseline PATH [--runs K] [--merge]] [--replicates N]
                [--budget SECONDS]
    accel gate FILE (--baseline PATH | --against GIT_REF) [--max-slowdown 10%] ... [--strict]
    accel gate calibrate FILE

Exit codes of `accel gate`: 0 pass, warn or re-baseline, 1 regression, 2 usage or bad input; under
--strict 3 for an invalid measurement, counts that need a re-baseline, or a warning whose estimate
lies beyond its threshold. Report files are written before exiting.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from accel.cli.common import console, err_console, escape, state
from accel.cli.live import LiveProgress
from accel.cli.paths import check_output_paths
from accel.core.budget import MAX_BUDGET_SECONDS
from accel.core.errors import AccelError

# Bounds on counts a flag takes: each replicate is a fresh process of seconds, so a thousand is
# hours (the budget's bound, a day, is accel.core.budget.MAX_BUDGET_SECONDS).
MAX_REPLICATES = 1000

VERDICT_STYLE = {
    "fail": "bad",
    "invalid": "warn",
    "rebaseline": "warn",
    "warn": "warn",
    "improved": "good",
    "pass": "good",
}


def bench_command(
    file: Path = typer.Argument(..., help="Pipeline file (.py)."),
    lock: Optional[Path] = typer.Option(None, "--lock", help="Re-apply the optimizations of this accel.lock.yaml."),
    json_path: Optional[Path] = typer.Option(
        None, "--json", help="Write the result as JSON (accel.bench/1); - writes it to stdout."
    ),
    save_baseline: Optional[Path] = typer.Option(None, "--save-baseline", help="Save the result as a gate baseline."),
    runs: int = typer.Option(
        1, "--runs", min=1, help="Bench runs to take one after another (a baseline's between-run spread)."
    ),
    merge: bool = typer.Option(
        False, "--merge", help="Append the run(s) to the baseline at --save-baseline (CI history)."
    ),
    replicates: int = typer.Option(6, "--replicates", min=1, max=MAX_REPLICATES, help="Fresh processes to measure in."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch intra-op threads in each replicate."),
    counts_only: bool = typer.Option(False, "--counts-only", help="Only the machine-independent counts (one process)."),
    budget: Optional[float] = typer.Option(
        None,
        "--budget",
        min=1.0,
        max=MAX_BUDGET_SECONDS,
        help="Bounds a hung call of the pipeline's code (its import, a forward): one past max(3x, +30 s) of it "
        "ends the bench naming the stage (exit 2) [default: a call past 120 s].",
    ),
) -> None:
    """Latency (median, p90, p99), throughput, peak memory and counts, from fresh processes."""
    from accel.core.io import write_json_atomic
    from accel.gating.baseline import from_bench, load_baseline, merged
    from accel.gating.baseline import save_baseline as write_baseline
    from accel.gating.bench import BenchConfig, bench, hang_seconds_for

    if (runs > 1 or merge) and save_baseline is None:
        raise AccelError("--runs and --merge shape a baseline", "add --save-baseline PATH")
    check_output_paths({"--json": json_path, "--save-baseline": save_baseline})
    if merge and save_baseline is not None and save_baseline.exists():
        load_baseline(save_baseline)  # a baseline that cannot be merged into is refused before the work
    config = BenchConfig(replicates=replicates, threads=threads, hang_seconds=hang_seconds_for(budget))
    results = []
    with LiveProgress(err_console, "bench") as live:
        for index in range(1 if counts_only else runs):
            prefix = f"run {index + 1}/{runs}: " if runs > 1 else ""
            results.append(bench(file, lock, config, timing=not counts_only, progress=lambda m: live(prefix + m)))
    result = results[-1]
    console.print(bench_table(result))
    if json_path:
        write_json_atomic(json_path, result.to_dict())
        if not state.json_to_stdout:
            err_console.print(f"[muted]result written to {escape(str(json_path))}[/]")
    if save_baseline:
        baseline = from_bench(*results)
        if merge and save_baseline.exists():
            baseline = merged(load_baseline(save_baseline), baseline)
        write_baseline(save_baseline, baseline)
        err_console.print(f"[muted]baseline written to {save_baseline} ({len(baseline.runs)} runs)[/]")


def bench_table(result) -> Table:
    from accel.cli.units import format_bytes, format_seconds

    measured = f"{len(result.replicates)} fresh processes" if result.replicates else "counts only"
    table = Table(title=f"accel bench {result.target}  ({measured})", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    summary = result.summary()
    for key, label in (
        ("median_seconds", "latency median"),
        ("p90_seconds", "latency p90"),
        ("p99_seconds", "latency p99"),
    ):
        if key in summary:
            table.add_row(label, format_seconds(summary[key]))
    if "samples_per_s" in summary:
        table.add_row("throughput", f"{summary['samples_per_s']:,.1f} samples/s")
    if "peak_memory_bytes" in summary:
        table.add_row("peak memory", format_bytes(summary["peak_memory_bytes"]))
    for key, value in (result.counts or {}).items():
        shown = format_bytes(value) if key.endswith("bytes") or key == "bytes_moved" else f"{value:,}"
        table.add_row(key.replace("_", " "), shown)
    env = result.environment
    table.caption = (
        f"{env.get('cpu_model', '?')}, {env.get('cores', '?')} cores, {env.get('threads', '?')} threads, "
        f"torch {env.get('torch_version', '?')}" + (f", {env['gpu']}" if env.get("gpu") else "")
    )
    return fit_title(table)


def fit_title(table: Table) -> Table:
    """The table at least as wide as its title and caption, so that neither wraps mid-phrase (a
    narrow table wraps them at its own width; the console's width still bounds it)."""
    table.min_width = max(len(str(table.title or "")), len(str(table.caption or ""))) + 4
    return table


def gate_command(
    targets: List[str] = typer.Argument(
        ..., metavar="[calibrate] FILE", help="Pipeline file; 'calibrate FILE' measures noise."
    ),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="Stored baseline (accel bench --save-baseline)."),
    against: Optional[str] = typer.Option(None, "--against", help="Git ref to compare with (e.g. the merge-base)."),
    max_slowdown: Optional[str] = typer.Option(None, "--max-slowdown", help="Allowed latency growth (default 10%)."),
    max_memory_growth: Optional[str] = typer.Option(
        None, "--max-memory-growth", help="Allowed peak memory growth (default 10%)."
    ),
    max_flops_growth: Optional[str] = typer.Option(
        None, "--max-flops-growth", help="Allowed FLOPs growth (default 0%)."
    ),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Write JUnit XML (one testcase per metric)."),
    markdown_path: Optional[Path] = typer.Option(
        None, "--markdown", help="Write a Markdown summary (e.g. $GITHUB_STEP_SUMMARY)."
    ),
    json_path: Optional[Path] = typer.Option(
        None, "--json", help="Write everything as JSON (accel.gate/2); - writes it to stdout."
    ),
    strict: bool = typer.Option(False, "--strict", help="Exit 3 when a measurement is invalid."),
    counts_only: bool = typer.Option(
        False, "--counts-only", help="Gate the machine-independent counts only (fast, stable)."
    ),
    replicates: int = typer.Option(
        6,
        "--replicates",
        min=2,
        max=MAX_REPLICATES,
        help="Process pairs to start with (more are added while undecided; under 6 is INVALID); calibrate: A/A pairs.",
    ),
    max_replicates: int = typer.Option(
        16, "--max-replicates", min=4, max=MAX_REPLICATES, help="Most process pairs to take."
    ),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch intra-op threads in each replicate."),
    budget: float = typer.Option(
        300.0, "--budget", min=1.0, max=MAX_BUDGET_SECONDS, help="Seconds after which no more pairs are added."
    ),
) -> None:
    """Fail CI on a performance regression: paired fresh-process statistics and exact counts."""
    from accel.gating.bench import BenchConfig, hang_seconds_for
    from accel.gating.run import GateConfig
    from accel.gating.thresholds import resolve_thresholds

    check_output_paths({"--junit": junit, "--markdown": markdown_path, "--json": json_path})
    if len(targets) == 2 and targets[0] == "calibrate":
        mode, file = "calibrate", Path(targets[1])
    elif len(targets) == 1:
        mode, file = "gate", Path(targets[0])
    else:
        raise AccelError(
            f"expected FILE or 'calibrate FILE', got {' '.join(targets)}",
            "accel gate FILE --baseline PATH, or accel gate calibrate FILE",
        )
    thresholds = resolve_thresholds(
        {"max_slowdown": max_slowdown, "max_memory_growth": max_memory_growth, "max_flops_growth": max_flops_growth},
        Path.cwd(),
    )
    config = GateConfig(
        thresholds=thresholds,
        # A small --budget also bounds a hung call in a replicate; the default keeps the bench's limit.
        bench=BenchConfig(threads=threads, hang_seconds=hang_seconds_for(budget, tighten_only=True)),
        start_pairs=replicates,
        max_pairs=max(replicates, max_replicates),
        budget_seconds=budget,
        timing=not counts_only,
    )
    if mode == "calibrate":
        _calibrate(file, config, json_path)
        return
    if (baseline is None) == (against is None):
        raise AccelError(
            "give exactly one of --baseline PATH and --against GIT_REF",
            "e.g. accel gate FILE --against $(git merge-base origin/main HEAD)",
        )
    code = _gate(file, baseline, against, config, junit, markdown_path, json_path, strict)
    raise typer.Exit(code)


def _gate(
    file: Path,
    baseline: Path | None,
    against: str | None,
    config,
    junit: Path | None,
    markdown_path: Path | None,
    json_path: Path | None,
    strict: bool,
) -> int:
    from accel.core.io import write_text_atomic
    from accel.gating.against import gate_against
    from accel.gating.reports import json_text, junit_xml, markdown
    from accel.gating.run import gate_baseline

    with LiveProgress(err_console, "gate") as progress:
        result = (
            gate_baseline(file, baseline, config, progress=progress)
            if baseline is not None
            else gate_against(file, str(against), config, progress=progress)
        )
    for path, text in ((junit, junit_xml), (markdown_path, markdown), (json_path, json_text)):
        if path is not None:
            write_text_atomic(path, text(result))
    console.print(gate_table(result))
    for v in result.verdicts:
        if v.verdict.value != "pass":
            console.print(
                f"[{VERDICT_STYLE[v.verdict.value]}]{v.verdict.value}[/] {v.metric}: {v.reason}",
                highlight=False,
                soft_wrap=True,
            )
    if result.proposed_baseline:
        err_console.print(f"[muted]counts dropped: updated baseline for review at {result.proposed_baseline}[/]")
    if any(v.verdict.value == "rebaseline" for v in result.verdicts):
        console.print(
            "[warn]re-baseline:[/] the stored counts come from another torch version or device; "
            "they were not compared" + (" (--strict: exit 3)" if strict else ""),
            soft_wrap=True,
        )
    code = result.exit_code(strict)
    console.print(f"[title]gate: {result.verdict.value.upper()}[/] (exit {code})")
    return code


def gate_table(result) -> Table:
    from accel.gating.reports import format_change, format_interval, format_noise, format_value
    from accel.gating.verdicts import sort_by_severity

    table = Table(title=f"accel gate {result.target} vs {result.reference}", title_justify="left")
    for name, justify in (
        ("verdict", "left"),
        ("metric", "left"),
        ("baseline", "right"),
        ("candidate", "right"),
        ("change", "right"),
        ("95% CI", "right"),
        ("noise", "right"),
        ("threshold", "right"),
        ("n", "right"),
    ):
        table.add_column(name, justify="left" if justify == "left" else "right")
    for v in sort_by_severity(result.verdicts):
        table.add_row(
            f"[{VERDICT_STYLE[v.verdict.value]}]{v.verdict.value}[/]",
            v.metric,
            format_value(v.metric, v.baseline_value),
            format_value(v.metric, v.candidate_value),
            format_change(v.change),
            format_interval(v),
            format_noise(v),
            f"{v.threshold * 100:.1f}%",
            str(v.samples),
        )
    return fit_title(table)


def _calibrate(file: Path, config, json_path: Path | None) -> None:
    from accel.core.io import write_json_atomic
    from accel.gating.run import calibrate

    with LiveProgress(err_console, "gate calibrate") as live:
        result = calibrate(file, config, pairs=config.start_pairs, progress=live)
    table = Table(
        title=f"accel gate calibrate {result.target}  ({result.pairs} A/A process pairs)", title_justify="left"
    )
    for name in ("metric", "noise (per-pair sd)", "largest A/A change", "threshold", "resolvable"):
        table.add_column(name, justify="left" if name == "metric" else "right")
    from accel.gating.verdicts import METRICS

    for metric, noise in result.noise.items():
        threshold = config.thresholds.for_metric(METRICS[metric])
        ok = threshold >= result.recommended(metric)
        table.add_row(
            metric,
            f"±{noise * 100:.2f}%",
            f"{result.largest_change[metric] * 100:.2f}%",
            f"{threshold * 100:.1f}%",
            "[good]yes[/]" if ok else f"[bad]no[/] (use >= {result.recommended(metric) * 100:.1f}%)",
        )
    console.print(fit_title(table))
    if result.below_noise:
        console.print(
            f"[warn]below the noise floor:[/] {', '.join(result.below_noise)}: the gate would often WARN "
            "rather than decide; raise them to the recommended value",
            soft_wrap=True,
        )
    if json_path:
        write_json_atomic(json_path, result.to_dict())


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_command)
    app.command("gate")(gate_command)
