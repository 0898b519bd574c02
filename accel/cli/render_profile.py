"""Rendering a profile report for the terminal with Rich (units from accel.cli.units)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from accel.cli.units import format_seconds, format_share
from accel.profiling.report import Report
from accel.profiling.script import TOO_FEW_STEPS
from accel.profiling.top import ABOVE_ROOF_NOTE, SECTIONS, GroupRate, top_groups

BAR_WIDTH = 40
# The share bar's narrowest: below this many characters a bar no longer shows a share apart.
MIN_BAR_WIDTH = 10
# What a boxed Rich table adds to its columns: one space either side of each, a border between
# each and one at either edge.
CELL_PADDING, EDGE = 3, 1
# The top tables' layer or op name keeps this many characters a line, however narrow the terminal.
MIN_NAME_WIDTH = 12
STAGE_HEADERS = ("stage", "per sample", "samples/s", "share")


def stage_table(report: Report, width: int = 80) -> Table:
    """The stages with their share as a bar, the bar as wide as `width` leaves (up to BAR_WIDTH),
    so the table fits an 80-column terminal whole: no column cut, a long stage name wraps."""
    title = (
        "Script loop (time in DataLoader __next__ vs the step between calls)"
        if report.mode == "script"
        else "Stages (each measured on its own, main process)"
    )
    rows = [
        (
            stage.name,
            format_seconds(stage.per_sample_seconds),
            f"{stage.samples_per_s:,.1f}" if stage.samples_per_s else "-",
            format_share(stage.share),
        )
        for stage in report.stages
    ]
    natural = [max([len(header), *(len(row[i]) for row in rows)]) for i, header in enumerate(STAGE_HEADERS)]
    fixed = sum(natural[1:]) + CELL_PADDING * (len(natural) + 1) + EDGE
    # A long stage name gives the bar half the room left at most, and wraps in its cell.
    name_width = min(natural[0], max(MIN_NAME_WIDTH, (width - fixed) // 2))
    bar_width = max(MIN_BAR_WIDTH, min(BAR_WIDTH, width - fixed - name_width))
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column("stage", overflow="fold", max_width=name_width)
    for header in STAGE_HEADERS[1:]:
        table.add_column(header, justify="right", no_wrap=True)
    table.add_column("", width=bar_width, no_wrap=True)
    for stage, row in zip(report.stages, rows):
        bar = Text("█" * max(1, round(stage.share * bar_width)) if stage.share > 0 else "", style="bar")
        table.add_row(*row, bar)
    return table


def fit_widths(natural: list[int], narrowest: list[int], room: int) -> list[int]:
    """Column widths that fit `room` characters: the column with the most to spare gives one
    character at a time, none below its narrowest (past that the table is wider than the room)."""
    widths = list(natural)
    while sum(widths) > room:
        spare = [width - least for width, least in zip(widths, narrowest)]
        widest = max(range(len(widths)), key=lambda i: spare[i])
        if spare[widest] <= 0:
            break
        widths[widest] -= 1
    return widths


def top_table(section: str, rows: list[GroupRate], width: int = 80) -> Table:
    """The slowest layers or ops: share of the model call, achieved rate against the roof that
    applies (bandwidth or compute, from the calibration) and the cure of the finding that covers it.
    Long names and cures wrap rather than push a column off an 80-column terminal."""
    noun = "layer" if section == "layers" else "op"
    table = Table(title=f"Top {section} (share of one model call)", title_justify="left", expand=False)
    cells = [[row.label, format_share(row.share), row.achieved_text, row.roof_text, row.cure_text] for row in rows]
    headers = [noun, "share", "achieved (of roof)", "roof", "cure"]
    natural = [max(len(text) for text in column) for column in zip(headers, *cells)]
    # A cure's name never breaks inside and neither does a share; a layer name folds (its dots say
    # where it is), rates and roofs wrap between words.
    cure_width = max(len(row.cure_text.split()[0]) for row in rows)
    narrowest = [MIN_NAME_WIDTH, natural[1], len("GFLOP/s"), len("bandwidth"), max(cure_width, len("cure"))]
    widths = fit_widths(natural, narrowest, width - 3 * len(headers) - 1)
    for header, column_width in zip(headers, widths):
        numeric = header in ("share", "achieved (of roof)")
        table.add_column(header, justify="right" if numeric else "left", overflow="fold", width=column_width)
    for row in rows:
        table.add_row(
            escape(row.label),
            format_share(row.share),
            Text(row.achieved_text, style="bad" if row.above_roof else ""),
            row.roof_text,
            Text(row.cure_text, style="good" if row.cures else "muted"),
        )
    return table


def print_top_groups(report: Report, console: Console) -> None:
    """The top layers and ops tables, where the cost pass ran, and what a "!" in them means."""
    data = report.to_dict()
    tables = {section: top_groups(data, section) for section in SECTIONS}
    for section, rows in tables.items():
        if rows:
            console.print(top_table(section, rows, console.width))
    if any(row.above_roof for rows in tables.values() for row in rows):
        console.print(f"[warn]![/] {ABOVE_ROOF_NOTE} (accel calibrate measures the roofs again)")


def findings_block(report: Report) -> Group:
    """Findings by predicted saving: a headline per finding, its summary, what to try."""
    parts = [Text("Findings (by predicted saving of the best cure)", style="title")]
    for f in report.findings:
        head = Text.assemble(
            (f"{f.severity:<6} ", f"severity.{f.severity}"),
            (f.kind, "bold"),
            f"  share {format_share(f.share)}  impact {format_share(f.impact)}",
        )
        if f.recommendations:
            head.append(f"  try: {', '.join(f.recommendations)}", style="good")
        parts.append(head)
        parts.append(Text("       " + f.summary, style="muted" if f.severity in ("low", "info") else ""))
    return Group(*parts)


def render_profile(report: Report, console: Console) -> None:
    where = f"{report.machine.device}: {report.machine.device_name}" if report.machine else "?"
    head = Text.assemble(("accel profile ", "title"), (report.target, "bold"), f"  [{report.mode}]  ", (where, "muted"))
    console.print(head)
    for note in report.extra.get("notes", []):
        console.print(f"[muted]note: {escape(note)}[/]", soft_wrap=True)
    for name, reason in report.extra.get("hardware_passes_skipped", {}).items():
        console.print(f"[warn]{name} pass skipped:[/] {escape(reason)}", soft_wrap=True)
    lines = []
    if report.samples_per_s:
        lines.append(f"throughput {report.samples_per_s:,.1f} samples/s")
    if report.latency.get("median_seconds") is not None:
        lines.append(
            f"latency per batch: median {format_seconds(report.latency['median_seconds'])}"
            + (f", p90 {format_seconds(report.latency['p90_seconds'])}" if "p90_seconds" in report.latency else "")
        )
    e2e = report.extra.get("end_to_end")
    if e2e:
        line = (
            f"end to end: {e2e['samples']} samples in {format_seconds(e2e['seconds'])}, "
            f"waiting for data {format_share(e2e['wait_share'])} of the time "
            f"(num_workers={e2e['num_workers']})"
        )
        if e2e.get("startup_seconds"):
            line += f"; worker start-up {format_seconds(e2e['startup_seconds'])} not included"
        lines.append(line)
    if lines:
        console.print("\n".join(lines))
    if report.stages:
        console.print(stage_table(report, console.width))
    if report.extra.get("ranks"):
        console.print(rank_table(report))
    print_top_groups(report, console)
    if report.findings:
        console.print(findings_block(report))
    primary = report.primary
    too_few = any(str(note).startswith(TOO_FEW_STEPS) for note in report.extra.get("notes", []))
    verdict = f"bottleneck: [bold]{primary}[/]" if primary != "none" else "no bottleneck above low severity"
    if primary == "none" and too_few:
        verdict = "no verdict: too few steps were measured (the note above says what budget would do)"
    console.print(Panel(verdict, expand=False))
    if report.trace_dir:
        logdir = escape(str(Path(report.trace_dir).parent))
        console.print(
            f"[muted]trace: {escape(report.trace_dir)} (tensorboard --logdir {logdir}; "
            "or open the .pt.trace.json in Perfetto)[/]"
        )


def rank_table(report: Report) -> Table:
    """A multi-rank job: per rank, step time and where it goes; the straggler's row marked."""
    straggler = report.finding("straggler")
    marked = straggler.evidence["rank"] if straggler and straggler.severity in ("high", "medium") else None
    job = report.extra.get("multirank", {})
    title = f"Ranks ({job.get('world_size', len(report.extra['ranks']))}, from {job.get('source', '?')}; per step)"
    table = Table(title=title, title_justify="left", expand=False)
    for name in ("rank", "steps", "step (median)", "data wait", "compute", "collective wait", "arrived last"):
        table.add_column(name, justify="left" if name == "rank" else "right")
    last = straggler.evidence.get("arrived_last_by_rank", {}) if straggler else {}
    for rank in report.extra["ranks"]:
        steps = max(rank["steps"], 1)
        label = f"{rank['rank']}" + (" straggler" if rank["rank"] == marked else "")
        table.add_row(
            Text(label, style="bad" if rank["rank"] == marked else ""),
            str(rank["steps"]),
            format_seconds(rank["median_step_seconds"]),
            f"{format_seconds(rank['data_wait_seconds'] / steps)} {format_share(rank['data_wait_share'])}",
            f"{format_seconds(rank['compute_seconds'] / steps)} {format_share(rank['compute_share'])}",
            f"{format_seconds(rank['collective_seconds'] / steps)} {format_share(rank['collective_share'])}",
            format_share(last[str(rank["rank"])]) if str(rank["rank"]) in last else "-",
        )
    return table
