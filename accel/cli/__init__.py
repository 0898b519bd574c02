"""The `accel` command line: thin commands that parse, call one library function and render.

Each module in this package adds its commands through `register(app)`. Errors a user can fix
(AccelError) become one red line with the hint and exit code 2; `--debug` shows the traceback.
Ctrl-C and SIGTERM end the run the same way: the processes accel started are ended, temporary
folders and worktrees removed (on the way out), one `interrupted:` line, exit code 130.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import signal
import sys
from types import FrameType
from typing import Any, Callable, Optional

import typer

from accel._version import __version__
from accel.cli.common import INTERRUPTED_EXIT, err_console, escape, plain_help, runs_command, state
from accel.core import watchdog
from accel.core.library_env import keep_library_files_in_cache
from accel.core.profiler_notes import quiet_libraries

ROOT_EXIT_CODES = (
    "Exit codes: 0 done; 1 accel gate found a regression, accel verify found the lock no longer pays; "
    "2 bad input, a failed or hung pipeline, or nothing written; 3 accel gate --strict: an invalid "
    "measurement; 130 interrupted (Ctrl-C or SIGTERM)."
)
HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="accel",
    help="Find why a PyTorch pipeline is slow or big, make it faster, and keep it fast in CI.",
    epilog=ROOT_EXIT_CODES,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    # Plain click help: no box drawing wrapped mid-word in a CI log, no `<bool>` beside every flag,
    # and `[default: ...]` in a help string kept as text rather than read as Rich markup.
    rich_markup_mode=None,
    context_settings=HELP_OPTIONS,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"accel {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
    version: Optional[bool] = typer.Option(
        None, "--version", "-V", callback=_print_version, is_eager=True, help="Print accel's version and exit."
    ),
) -> None:
    state.debug = debug


# Every command's exit codes, and what some commands add to them.
EXIT_CODES = {
    0: "done",
    2: "bad input, a failed or hung pipeline, or nothing written",
    INTERRUPTED_EXIT: "interrupted (Ctrl-C or SIGTERM)",
}
COMMAND_EXIT_CODES = {
    "gate": {1: "a regression", 3: "under --strict: an invalid measurement or counts to re-baseline"},
    "verify": {1: "the lock no longer pays here"},
}


def command_exit_codes(name: str | None) -> str:
    codes = {**EXIT_CODES, **COMMAND_EXIT_CODES.get(name or "", {})}
    return "Exit codes: " + "; ".join(f"{code} {codes[code]}" for code in sorted(codes)) + "."


# Commands whose output is the user's own script's (its warnings are its own): libraries not quieted.
USER_OUTPUT_COMMANDS = ("run", "cache", "recipes")


def quietly(callback: Callable[..., Any]) -> Callable[..., Any]:
    """The command with transformers' and ONNX Runtime's routine warnings kept off the terminal."""

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        with quiet_libraries():
            return callback(*args, **kwargs)

    return run


def _wrap_every_command(typer_app: typer.Typer) -> None:
    """The one place errors are handled: every command (and every group's) is wrapped once, and its
    help ends with its exit codes."""
    for command in typer_app.registered_commands:
        if command.callback is not None:
            callback = command.callback if command.name in USER_OUTPUT_COMMANDS else quietly(command.callback)
            command.callback = runs_command(callback)
        if command.epilog is None:
            command.epilog = command_exit_codes(command.name)
        command.cls = plain_help(command.cls)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _wrap_every_command(group.typer_instance)


for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("common", "render"):
        _mod = importlib.import_module(f"{__name__}.{_module.name}")
        if hasattr(_mod, "register"):
            _mod.register(app)
_wrap_every_command(app)


def _interrupt(signum: int, frame: Optional[FrameType]) -> None:
    """Ctrl-C and SIGTERM alike: end the processes accel started (a hung worker would keep the cleanup
    waiting on it), then KeyboardInterrupt in the main thread, so every `finally` on the way out
    removes its temporary folder or worktree. Signals during that cleanup are ignored."""
    for handled in HANDLED_SIGNALS:
        signal.signal(handled, signal.SIG_IGN)
    state.signal_name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    watchdog.end_children()
    raise KeyboardInterrupt


HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def main() -> None:
    """Entry point of the `accel` console script."""
    keep_library_files_in_cache()  # before any command imports onnxruntime or compiles
    for handled in HANDLED_SIGNALS:
        signal.signal(handled, _interrupt)
    try:
        # Whatever the command ran (a pipeline's import, a script as __main__) and left running ends
        # with it, a daemon it double-forked included.
        with watchdog.children_reaped():
            code = app(standalone_mode=False)
    except (typer.Abort, KeyboardInterrupt):  # outside a command (commands end through common.interruptible)
        err_console.print("[error]interrupted:[/] nothing was started")
        sys.exit(INTERRUPTED_EXIT)
    except typer.TyperException as exc:
        if "--debug" in sys.argv:
            raise
        err_console.print(
            f"[error]error:[/] {escape(exc.format_message())}  [hint](run 'accel --help')[/]",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
