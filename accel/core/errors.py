"""The errors accel raises for problems a user can fix.

The CLI catches `AccelError` in one place, prints one line with the hint and exits with code 2.
Anything else that escapes is a bug in accel and keeps its traceback.
"""

from __future__ import annotations

from typing import Any


class AccelError(Exception):
    """A problem the user can fix: `message` names it, `hint` says how."""

    exit_code = 2

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class PipelineLoadError(AccelError):
    """The pipeline file is missing, fails to import, or defines no pipeline."""


class PipelineError(AccelError):
    """A Pipeline was built with wrong types, or one of its stages raised."""


class UnknownComponentError(AccelError):
    """A name (analyzer, optimizer, recipe) that is not registered."""


class RecipeError(AccelError):
    """A recipe file or rule is invalid: the message names the file, rule and key."""


class LockError(AccelError):
    """A lock file is corrupt, foreign, or does not match the pipeline file."""


class CacheError(AccelError):
    """A sample or a cache directory the decoded-sample cache cannot handle."""


class BenchError(AccelError):
    """A replicate could not be measured: the pipeline failed in the worker, or the worker died."""


class BaselineError(AccelError):
    """A baseline file is missing, corrupt, foreign or of an incompatible version."""


class GateError(AccelError):
    """The gate cannot run: a git ref that does not exist, a file missing at that ref."""


class MissingDependencyError(AccelError):
    """A dependency is not installed; the hint names the pip extra that installs it, or the package
    itself when it is one of accel's own dependencies (`extra` None: installing accel installs it)."""

    def __init__(self, package: str, purpose: str, extra: str | None = None) -> None:
        super().__init__(
            f"{purpose} needs the package '{package}', which is not installed",
            f"pip install 'accel[{extra}]'" if extra else f"pip install {package} (a dependency of accel)",
        )


def require(module: str, purpose: str, extra: str | None = None) -> Any:
    """The module `module`, imported; a MissingDependencyError naming `purpose` when it is not installed."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(module, purpose, extra) from exc
