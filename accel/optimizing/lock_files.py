"""The files and folders a lock names, resolved as untrusted data.

A lock travels (committed, downloaded from CI), so every name in it is input: a file it names
(an ONNX file, its external weights; the `*_file` keys of an entry's state and the `artifacts`
list) must be a plain relative name inside the lock's folder (no absolute path, no `..`, no
symlink that leads out), a regular file, and listed in the lock's `artifacts` with the sha256 it
must have. A folder it names (a decoded-sample cache) must lie under a folder the user chose.
Anything else is a LockError naming the field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

from accel.core.errors import LockError

# Bytes read at a time when hashing a file (an ONNX file's weights can be gigabytes).
HASH_BLOCK_BYTES = 1 << 20

REWRITE_HINT = "run accel optimize again to write a fresh lock"
# A lock that no longer matches what it describes can be forced from Python; of the commands only
# `accel run` has --force, and it says so itself (accel.optimizing.script_loader).
FORCE_HINT = "run accel optimize again, or force it (accel.load(..., force=True))"


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HASH_BLOCK_BYTES), b""):
            h.update(block)
    return h.hexdigest()


def resolve_lock_file(
    folder: Path,
    name: Any,
    field: str,
    artifacts: Mapping[str, str] | None = None,
    *,
    check_digest: bool = True,
) -> Path:
    """The file `name` (as the lock's `field` holds it) inside the lock's `folder`.

    `artifacts` (file name -> sha256, the lock's list): the name must be listed and, with
    `check_digest`, the file must have that sha256. None: files an optimize run wrote itself, not
    hashed yet, so only where they are is checked."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise LockError(f"the lock's {field} is {name!r}, not a file name", REWRITE_HINT)
    parts = PurePath(name).parts
    if PurePath(name).is_absolute() or ".." in parts:
        raise LockError(
            f"the lock's {field} is {name!r}: a lock names files inside its own folder only "
            "(no absolute path, no '..')",
            REWRITE_HINT,
        )
    root = Path(folder).resolve()
    path = Path(folder) / name
    if not path.resolve().is_relative_to(root):
        raise LockError(f"the lock's {field} {name!r} leads out of the lock's folder {root} (a symlink)", REWRITE_HINT)
    if not path.is_file():
        raise LockError(f"{path} is missing: the lock's {field} names it", "copy the whole folder accel optimize wrote")
    if artifacts is None:
        return path
    if name not in artifacts:
        raise LockError(
            f"the lock's {field} names {name!r}, which its artifacts do not list: there is no sha256 to check it by",
            REWRITE_HINT,
        )
    if check_digest:
        actual = file_sha256(path)
        if actual != artifacts[name]:
            raise LockError(
                f"{path} changed since the lock was written (sha256 {actual[:12]}, lock has {artifacts[name][:12]})",
                FORCE_HINT,
            )
    return path


def resolve_lock_folder(value: Any, field: str, roots: Sequence[Path]) -> Path:
    """The folder a lock names (`field`) for accel to write in: it must lie under one of `roots`
    (accel's cache root, the lock's folder), so a lock cannot point accel's writes elsewhere."""
    if not isinstance(value, str) or not value or "\0" in value:
        raise LockError(f"the lock's {field} is {value!r}, not a folder", REWRITE_HINT)
    resolved = Path(value).resolve()
    if not any(resolved.is_relative_to(Path(root).resolve()) for root in roots):
        raise LockError(
            f"the lock's {field} {value!r} lies outside {' and '.join(str(r) for r in roots)}: "
            "a lock may not choose where accel writes",
            "remove it from the lock (accel's cache is used), or set ACCEL_CACHE_DIR to a folder that holds it",
        )
    return resolved
