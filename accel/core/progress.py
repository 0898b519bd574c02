"""How a long library call says what it is doing: a `Progress` callable the CLI passes in (it
prints to stderr; the library never prints), and the silent default."""

from __future__ import annotations

from typing import Callable

Progress = Callable[[str], None]


def no_progress(message: str) -> None:
    """The default Progress: says nothing."""
    return None
