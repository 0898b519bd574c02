"""The `accel` command line: thin commands that parse, call one library function and render.

Each module in this package adds its commands through `register(app)`. Errors a user can fix
(AccelError) become one red line with the hint and exit code 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

from accel.cli.common import err_console, handles_errors, state

app = typer.Typer(
    name="accel",
    help="Find why a PyTorch pipeline is slow or big, make it faster, and keep it fast in CI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.")) -> None:
    state.debug = debug


def _handle_errors_everywhere(typer_app: typer.Typer) -> None:
    """The one place errors are handled: every command (and every group's) is wrapped once."""
    for command in typer_app.registered_commands:
        if command.callback is not None:
            command.callback = handles_errors(command.callback)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _handle_errors_everywhere(group.typer_instance)


for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("common", "render"):
        _mod = importlib.import_module(f"{__name__}.{_module.name}")
        if hasattr(_mod, "register"):
            _mod.register(app)
_handle_errors_everywhere(app)


def main() -> None:
    """Entry point of the `accel` console script."""
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        err_console.print("[error]error:[/] interrupted")
        sys.exit(130)
    except typer.TyperException as exc:
        if "--debug" in sys.argv:
            raise
        err_console.print(f"[error]error:[/] {exc.format_message()}  [hint](run 'accel --help')[/]", highlight=False)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
