"""How `accel optimize` shows its result: the candidates as a table on a wide terminal, else (narrow,
piped, a CI log) one block per candidate, so that no column is dropped and no verdict, interval or
reason is cut; each row as it is decided (for the live progress); the summary lines under them."""

from __future__ import annotations

import textwrap

from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from accel.cli.units import format_bytes, format_seconds
from accel.optimizing.decision import Verdict

# The narrowest terminal the candidates table is shown at: below it (or when not a terminal) the
# stacked layout, since the table's fixed columns take ~90 columns before the reason gets any.
WIDE_TABLE_COLUMNS = 120
# A stacked block: the indent of its labelled lines, the label's width, and the narrowest value
# column it wraps to (a terminal narrower than that folds the line instead).
BLOCK_INDENT, BLOCK_LABEL, MIN_VALUE_COLUMNS = 4, 10, 20

VERDICT_STYLES = {
    Verdict.ACCEPTED: "good",
    Verdict.REVERTED: "bad",
    Verdict.FAILED: "bad",
    Verdict.NOT_APPLICABLE: "muted",
    Verdict.SKIPPED: "muted",
}
VERDICT_LABELS = {Verdict.NOT_APPLICABLE: "n/a"}


def step_name(step: dict) -> str:
    """The candidate's optimizer with its parameters, when it has any: two variants of one optimizer
    (runtime.threads, runtime.threads (threads=1)) never read as the same row twice."""
    params = step.get("params") or {}
    if not params:
        return step["optimizer"]
    return f"{step['optimizer']} ({', '.join(f'{key}={value}' for key, value in params.items())})"


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


def _how_measured(data: dict) -> str:
    if data.get("mode") == "script":
        return "each script run interleaved with the script as written"
    return "each measured interleaved against the current best"


def _predicted(data: dict) -> dict[str, float]:
    return {
        **(data.get("predicted_speedup") or {}),
        **{s["optimizer"]: s["predicted_speedup"] for s in data["steps"] if s.get("predicted_speedup") is not None},
    }


def _one_time(step: dict) -> str:
    if step.get("speedup") is None:
        return "-"
    return format_seconds(step["setup_seconds"] + (step.get("first_call_seconds") or 0.0))


def steps_table(data: dict) -> Table:
    table = Table(
        title=f"Candidates (recipe {data['recipe']}, target {data['objective']}, {data['threads']} threads; "
        + _how_measured(data)
        + ")",
        title_justify="left",
        expand=True,
    )
    show_memory = any(step.get("memory_ratio") is not None for step in data["steps"])
    table.add_column("optimizer", no_wrap=True)
    table.add_column("speedup [95% CI]", justify="right", no_wrap=True)
    predicted = _predicted(data)
    if predicted:
        table.add_column("predicted", justify="right", no_wrap=True)
    if show_memory:
        table.add_column("memory", justify="right", no_wrap=True)
    table.add_column("fidelity", justify="right", no_wrap=True)
    table.add_column("one-time", justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("reason", ratio=1)
    for step in data["steps"]:
        row = [escape(step_name(step)), _speedup(step)]
        if predicted:
            row.append(f"{predicted[step['optimizer']]:.2f}x" if step["optimizer"] in predicted else "-")
        if show_memory:
            row.append(f"x{step['memory_ratio']:.2f}" if step.get("memory_ratio") is not None else "-")
        row += [_fidelity(step), _one_time(step)]
        table.add_row(
            *row,
            _verdict(step["verdict"]),
            escape(step["reason"]),
        )
    return table


class StepBlock:
    """One candidate as a block: its name and verdict, then one labelled line per measure and its
    reason, wrapped at word boundaries under its label at the width it is printed at (nothing
    dropped or cut, no padding to the right edge in a log)."""

    def __init__(self, step: dict, predicted: dict[str, float] | None = None, count: str = "") -> None:
        self.head = Text.assemble((count, "muted"), (step_name(step), "bold"), "  ", _verdict(step["verdict"]))
        self.fields: list[tuple[str, str]] = []
        if step.get("speedup") is not None:
            speed = _speedup(step)
            if predicted and step["optimizer"] in predicted:
                speed += f" (predicted {predicted[step['optimizer']]:.2f}x)"
            self.fields.append(("speedup", speed))
            if step.get("memory_ratio") is not None:
                self.fields.append(("memory", f"x{step['memory_ratio']:.2f}"))
            self.fields += [("fidelity", _fidelity(step)), ("one-time", _one_time(step))]
        self.fields.append(("reason", step["reason"]))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.head
        indent = " " * (BLOCK_INDENT + BLOCK_LABEL)
        width = max(options.max_width - len(indent), MIN_VALUE_COLUMNS)
        for label, value in self.fields:
            lines = textwrap.wrap(value, width, break_on_hyphens=False) or [""]
            yield Text.assemble((f"{'':{BLOCK_INDENT}}{label:<{BLOCK_LABEL}}", "muted"), lines[0])
            for line in lines[1:]:
                yield Text(indent + line)


def stacked_steps(data: dict) -> RenderableType:
    """The candidates for a narrow terminal or a log: a two-line title, then one block per candidate."""
    title = Text.assemble(
        ("Candidates", "title"),
        f" (recipe {data['recipe']}, target {data['objective']}, {data['threads']} threads)\n",
        (_how_measured(data), "muted"),
    )
    predicted = _predicted(data)
    return Group(title, *(StepBlock(step, predicted) for step in data["steps"]))


def render_steps(data: dict, out: Console) -> None:
    """The candidates as a table on a wide terminal, else stacked (see WIDE_TABLE_COLUMNS)."""
    wide = out.is_terminal and out.width >= WIDE_TABLE_COLUMNS
    out.print(steps_table(data) if wide else stacked_steps(data))


def decided_row(row: dict, index: int | None, total: int | None) -> RenderableType:
    """A candidate's row as soon as it is decided, for the live progress."""
    count = f"[{index}/{total}] " if index is not None and total is not None else ""
    return StepBlock(row, {}, count)


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


# Optimizers whose model runs in another runtime: its memory is outside what torch counts in this process.
OUTSIDE_TORCH = ("onnx.", "openvino.")


def peak_memory_change(base_bytes: int, final_bytes: int, kept: list[str]) -> str:
    """`a -> b`; a final peak of 0 B where a kept optimization runs the model in ONNX Runtime or
    OpenVINO (which keep their arena from setup, unseen here) is said to be not measured."""
    runtimes = [name for name in kept if name.startswith(OUTSIDE_TORCH)]
    if final_bytes <= 0 < base_bytes and runtimes:
        return f"{format_bytes(base_bytes)} -> not measured ({runtimes[0]} keeps its memory outside torch)"
    return f"{format_bytes(base_bytes)} -> {format_bytes(final_bytes)}"


def render_optimize(data: dict, out: Console, *, steps_shown: bool = False) -> None:
    """The result: the candidates, then the summary. `steps_shown`: the candidates were printed as
    they were decided on the same terminal, so one line points at them instead of repeating them."""
    out.print(
        Text.assemble(
            ("accel optimize ", "title"),
            (data["target"], "bold"),
            f"  [recipe {data['recipe']}]",
            ("  " + data["objective"], "muted"),
        )
    )
    if steps_shown:
        out.print("[muted]the candidates are above, each shown as it was decided[/]")
    elif data["steps"] or data.get("mode") != "script":
        render_steps(data, out)
    if data.get("mode") == "script":
        render_script_summary(data, out)
        return
    if data.get("partial"):
        render_partial(data, out)
        return
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
        out.print(f"peak memory {peak_memory_change(base['peak_bytes'], final['peak_bytes'], data.get('kept', []))}")
    style = "good" if data["kept"] else "warn"
    out.print(f"[{style}]{escape(data['message'])}[/]")
    if data.get("lock_path"):
        out.print(f"[muted]lock: {escape(data['lock_path'])}  (accel.load(FILE, lock=...) re-applies it)[/]")


def render_partial(data: dict, out: Console) -> None:
    """The lines under an interrupted search's candidates: what was kept, and its lock."""
    out.print(f"[warn]{escape(data['message'])}[/]")
    if data.get("lock_path"):
        kept = ", ".join(data["kept"]) or "nothing (the lock is empty)"
        out.print(f"[muted]lock of what was kept and verified, {escape(kept)}: {escape(data['lock_path'])}[/]")
    else:
        out.print("[muted]no lock written[/]")
