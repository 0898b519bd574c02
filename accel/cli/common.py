"""What every command shares: the consoles, the theme, the --debug state, error handling, `--json -`
and the watchdog over the user's code (every command runs through `runs_command`)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import typer
from rich.console import Console
from rich.theme import Theme
from typer.core import TyperCommand

from accel.core import watchdog
from accel.core.errors import AccelError

THEME = Theme(
    {
        "error": "bold red",
        "hint": "dim",
        "warn": "yellow",
        "good": "green",
        "bad": "red",
        "muted": "dim",
        "title": "bold",
        "severity.high": "bold red",
        "severity.medium": "yellow",
        "severity.low": "cyan",
        "severity.info": "dim",
        "bar": "cyan",
    }
)

console = Console(theme=THEME, highlight=False)
err_console = Console(theme=THEME, stderr=True, highlight=False)


@dataclasses.dataclass
class _State:
    debug: bool = False
    signal_name: str = ""  # the signal that interrupted the run (SIGTERM), empty for Ctrl-C
    json_to_stdout: bool = False  # `--json -`: the JSON goes to stdout, no "written to" line


state = _State()


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn an AccelError into one line on stderr and exit code 2 (re-raise under --debug)."""
    try:
        yield
    except AccelError as exc:
        if state.debug:
            raise
        message = f"[error]error:[/] {escape(exc.message)}"
        if exc.hint:
            message += f" [hint]({escape(exc.hint)})[/]"
        err_console.print(message, highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None


def runs_command(command: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command: an AccelError becomes one line and exit code 2, `--json -` goes to stdout, a
    `--budget` arms the watchdog over the user's code, and user code may not end the process."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with interruptible(), cli_errors(), watched(kwargs), watchdog.user_exit_refused(), json_to_stdout(kwargs):
            return command(*args, **kwargs)

    return wrapper


INTERRUPTED_EXIT = 130


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Ctrl-C or SIGTERM (raised as KeyboardInterrupt, see accel.cli.main): the `finally` blocks on the
    way out have removed temporary folders and worktrees; end what is left of the processes accel
    started, print one line, exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        exit_interrupted("the processes accel started were ended")


def exit_interrupted(what_now: str) -> None:
    """Ctrl-C or SIGTERM has stopped the command: ignore further signals while the way out cleans up,
    end what is left of the processes accel started, say `what_now` in one line, exit 130."""
    for handled in (signal.SIGINT, signal.SIGTERM):
        signal.signal(handled, signal.SIG_IGN)
    watchdog.end_children()
    by = state.signal_name or "Ctrl-C"
    err_console.print(f"[error]interrupted:[/] stopped by {by}; {escape(what_now)}", soft_wrap=True)
    raise typer.Exit(INTERRUPTED_EXIT) from None


# optimize without --budget runs the recipe's: the watchdog then assumes the longest built-in recipe's.
UNSET_BUDGET_SECONDS = 240.0


@contextlib.contextmanager
def watched(kwargs: dict[str, Any]) -> Iterator[None]:
    """Arm the watchdog for a command that takes `--budget`: a hung stage call ends the run (exit 2)."""
    if "budget" not in kwargs:
        yield
        return
    budget = kwargs["budget"] if kwargs["budget"] is not None else UNSET_BUDGET_SECONDS
    watchdog.arm(budget, lambda hang: report_hang(hang, budget))
    try:
        yield
    finally:
        watchdog.disarm()


def report_hang(hang: watchdog.Hang, budget_seconds: float) -> None:
    """One error line naming the hung stage, then the stack of the call that hung."""
    err_console.print(
        f"[error]error:[/] the pipeline's {escape(hang.stage)} stage has not returned after {hang.seconds:.0f} s "
        f"(--budget {budget_seconds:g} s): taken as hung, the processes accel started were ended "
        f"[hint](fix the {escape(hang.stage)}, or raise --budget if one call truly takes this long)[/]",
        highlight=False,
        soft_wrap=True,
    )
    sys.stderr.write(f"stack of the hung {hang.stage} call (most recent call last):\n{hang.stack}")


@contextlib.contextmanager
def json_to_stdout(kwargs: dict[str, Any]) -> Iterator[None]:
    """`--json -`: the command writes its JSON to a temporary file, copied to stdout when it succeeds;
    meanwhile the human output goes to stderr, so that stdout is the JSON alone."""
    if str(kwargs.get("json_path")) != "-":
        yield
        return
    folder = Path(tempfile.mkdtemp(prefix="accel-json-"))
    kwargs["json_path"] = folder / "stdout.json"
    console.stderr = True
    state.json_to_stdout = True
    try:
        yield
        if kwargs["json_path"].exists():
            sys.stdout.write(kwargs["json_path"].read_text())
            sys.stdout.flush()
    finally:
        console.stderr = False
        state.json_to_stdout = False
        shutil.rmtree(folder, ignore_errors=True)


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


# The value an option takes, in --help, in plain words: by option where the type says too little
# (a float is seconds, a list is names joined by commas), else by its type.
OPTION_PLACEHOLDERS = {
    "--budget": "SECONDS",
    "--only": "NAME[,NAME...]",
    "--skip": "NAME[,NAME...]",
    "--dynamic-dim": "NAME=VALUE",
    "--recipe": "NAME|PATH",
    "--against": "REF",
    "--max-slowdown": "PERCENT",
    "--max-memory-growth": "PERCENT",
    "--max-flops-growth": "PERCENT",
    "--out": "FOLDER",
    "--trace-dir": "FOLDER",
    "--traces": "FOLDER",
    "--dir": "FOLDER",
    "--namespace": "NAME",
}
# Else by what typer would write.
TYPE_PLACEHOLDERS = {"int": "N", "int range": "N", "float": "NUMBER", "float range": "NUMBER", "path": "PATH"}
# What typer writes after a parameter's name in --help: `<float range>`, `<list[str]>`, `<path>`.
TYPER_PLACEHOLDER = re.compile(r" <(?P<type>[^<>]*)>(\.\.\.)?$")


def plain_placeholder(opts: list[str], typer_type: str) -> str:
    """An option's value in plain words (SECONDS, NAME[,NAME...], PATH, N) for --help, from its
    names and what typer would write (`float range`)."""
    long_name = next((name for name in opts if name.startswith("--")), "")
    if long_name in OPTION_PLACEHOLDERS:
        return OPTION_PLACEHOLDERS[long_name]
    listed = re.fullmatch(r"list\[(.*)\]", typer_type)
    if listed:
        return plain_placeholder([], listed.group(1)) + "..."
    return TYPE_PLACEHOLDERS.get(typer_type, "TEXT" if typer_type == "str" else typer_type.upper())


class PlainHelpCommand(TyperCommand):
    """A command whose --help names each option's value in plain words (--budget SECONDS, --only
    NAME[,NAME...]) where typer writes its types (<float range>, <list[str]>); an argument's help
    row is its name alone (the usage line shows where it goes)."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        sections: dict[str, list[tuple[str, str]]] = {"Arguments": [], "Options": []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            name, text = record
            typer_type = TYPER_PLACEHOLDER.search(name)
            if param.param_type_name == "argument":
                sections["Arguments"].append((TYPER_PLACEHOLDER.sub("", name), text))
            elif typer_type:
                plain = plain_placeholder(list(param.opts), typer_type.group("type"))
                sections["Options"].append((name[: typer_type.start()] + " " + plain, text))
            else:
                sections["Options"].append((name, text))
        for title, rows in sections.items():
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def plain_help(cls: type[TyperCommand] | None) -> type[TyperCommand]:
    """The command class that gives a command's --help in plain words, unless it has its own."""
    return PlainHelpCommand if cls is None or cls is TyperCommand else cls
