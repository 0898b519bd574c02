"""Output paths checked before the work starts: a run that would fail writing its report fails first.

Every command that writes a file or a folder names it by a flag; `check_output_paths({flag: path})`
refuses, with one line naming the flag, a target that could not be written at the end: a folder
where a file goes, a file where a folder goes, a path under a file, a read-only folder, a missing
parent that cannot be created, a pipe or a device (the atomic rename would replace /dev/null itself).
It creates nothing: the run's own writers create what they need.
`-` (stdout, for `--json -`) is always writable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from accel.core.errors import AccelError

STDOUT = "-"
# Flags whose value is a folder accel writes into; every other output flag names a file.
FOLDER_FLAGS = frozenset({"--trace-dir", "--out", "the calibration cache", "the examples folder"})


def check_output_paths(paths: Mapping[str, "str | os.PathLike | None"]) -> None:
    """Raise an AccelError naming the first flag whose path could not be written; None is skipped."""
    for flag, path in paths.items():
        if path is None or str(path) == STDOUT:
            continue
        problem = output_problem(Path(path), folder=flag in FOLDER_FLAGS)
        if problem is not None:
            raise AccelError(f"{flag} {path}: {problem}", "choose a path you can write to")


def output_problem(path: Path, *, folder: bool) -> str | None:
    """Why `path` could not be written (as a folder when `folder`), or None when it could."""
    if path.is_dir() and not folder:
        return "is a folder, not a file"
    if path.exists() and not path.is_dir() and folder:
        return "is a file, not a folder"
    if path.exists() and not path.is_file() and not folder:  # the atomic rename would replace the device
        return "is not a regular file (a pipe or a device); use - for stdout"
    existing = path if folder and path.is_dir() else _nearest_existing_parent(path)
    if existing is None:
        return "no folder above it exists"
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"the folder {existing} is not writable"
    return None


def _nearest_existing_parent(path: Path) -> Path | None:
    """The closest existing ancestor of `path` (a file there means `path` sits under a file)."""
    for parent in path.absolute().parents:
        if parent.exists():
            return parent
    return None
