"""Files accel writes: atomic writers (a reader never sees a half-written file), JSON conversion,
and the one rule for where accel keeps its caches.

The cache root is `$ACCEL_CACHE_DIR` when set, else `$XDG_CACHE_HOME/accel`, else `~/.cache/accel`.
Calibrations live at the root, decoded samples under `decoded/`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, BinaryIO, Iterator

# Bytes copied at a time (an ONNX file's weights can be gigabytes).
COPY_BLOCK_BYTES = 1 << 20
# Not every platform has O_NOFOLLOW; O_EXCL alone already refuses an existing symlink.
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def cache_root() -> Path:
    """The folder accel caches under (calibration, decoded samples)."""
    if os.environ.get("ACCEL_CACHE_DIR"):
        return Path(os.environ["ACCEL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "accel"


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> None:
    """Write `data` to a temporary file unique to this writer, then rename it into place."""
    with _atomic_target(path, durable=durable) as handle:
        handle.write(data)


def copy_file_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy `src` to `dst` (its bytes, then its mode and times), as the atomic writer writes: a
    symlink at `dst` is replaced, never written through."""
    with open(src, "rb") as source, _atomic_target(dst, stat_from=src) as handle:
        shutil.copyfileobj(source, handle, COPY_BLOCK_BYTES)


@contextlib.contextmanager
def _atomic_target(
    path: str | os.PathLike, *, durable: bool = True, stat_from: str | os.PathLike | None = None
) -> Iterator[BinaryIO]:
    """A new temporary file beside `path` to write, renamed over `path` when the block ends.

    The temporary file is created, never opened if it exists (O_CREAT | O_EXCL | O_NOFOLLOW), and
    the rename replaces whatever `path` is, a symlink included: a file planted in an output folder
    (a symlink to a user's file) is never written through."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = target.parent / f".{target.name}.{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o666)
            break
        except FileExistsError:  # another writer's name (odds 2**-64): draw again
            continue
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        if stat_from is not None:
            shutil.copystat(stat_from, tmp, follow_symlinks=False)
        os.replace(tmp, target)
    except BaseException:
        unlink_quietly(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data: Any) -> None:
    """Write JSON so that a reader never sees a half-written file."""
    write_text_atomic(path, json.dumps(data, indent=2, default=json_default) + "\n")


def unlink_quietly(path: str | os.PathLike) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def json_default(value: Any) -> Any:
    """`json.dumps(default=...)` for dataclasses, paths, numpy/torch scalars, sets and tuples."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def plain_data(value: Any) -> Any:
    """`value` as plain data (str-keyed dicts, lists, strings, numbers), json_default applied all the
    way down, for writers without a default hook (yaml.safe_dump); what it cannot convert is left as it is."""
    if isinstance(value, dict):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if isinstance(value, str):
        return str(value)
    if value is None or isinstance(value, bytes) or type(value) in (bool, int, float):
        return value
    try:
        return plain_data(json_default(value))
    except TypeError:
        return value
