"""What every command shares: the consoles, the theme, the --debug state and error handling."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any, Callable, Iterator

import typer
from rich.console import Console
from rich.theme import Theme

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


def handles_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command so that an AccelError it raises becomes one line and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with cli_errors():
            return command(*args, **kwargs)

    return wrapper


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)
