"""The lock file: what `accel optimize` kept, so `accel.load(FILE, lock=...)` can re-apply it.

`accel.lock.yaml` (schema `accel.lock/1`) records the pipeline file's sha256, the versions it was
measured with, and one entry per kept optimization in the order it is applied (optimizer name,
recipe parameters, and the state the optimizer needs to restore itself, such as the name of an
ONNX file next to the lock). An empty `optimizations` list is a valid lock: nothing helped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import platform
from pathlib import Path
from typing import Any

import torch
import yaml

from accel._version import __version__
from accel.core.errors import AccelError, LockError
from accel.core.io import write_text_atomic
from accel.core.loading import load_pipeline
from accel.core.pipeline import Pipeline

LOCK_SCHEMA = "accel.lock/1"
LOCK_NAME = "accel.lock.yaml"


@dataclasses.dataclass(frozen=True)
class LockEntry:
    optimizer: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    state: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Lock:
    pipeline_file: str
    pipeline_sha256: str
    entries: tuple[LockEntry, ...] = ()
    recipe: str = ""
    target: str = ""
    speedup: float | None = None
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    schema: str = LOCK_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "pipeline": {"file": self.pipeline_file, "sha256": self.pipeline_sha256},
            "recipe": self.recipe,
            "target": self.target,
            "speedup": self.speedup,
            "versions": dict(self.versions),
            "optimizations": [dataclasses.asdict(e) for e in self.entries],
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "lock") -> "Lock":
        if not isinstance(data, dict) or data.get("schema") != LOCK_SCHEMA:
            found = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise LockError(
                f"{where} is not an accel lock (schema: {found!r}, expected {LOCK_SCHEMA!r})",
                "pass the accel.lock.yaml that accel optimize wrote",
            )
        pipeline = data.get("pipeline")
        entries = data.get("optimizations")
        if (
            not isinstance(pipeline, dict)
            or not isinstance(pipeline.get("sha256"), str)
            or not isinstance(entries, list)
        ):
            raise LockError(
                f"{where} is corrupt: it needs pipeline.sha256 and an optimizations list",
                "run accel optimize again to write a fresh lock",
            )
        parsed = []
        for i, entry in enumerate(entries):
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("optimizer"), str)
                or not isinstance(entry.get("params", {}), dict)
                or not isinstance(entry.get("state", {}), dict)
            ):
                raise LockError(
                    f"{where} is corrupt: optimization {i + 1} needs optimizer, params and state",
                    "run accel optimize again to write a fresh lock",
                )
            parsed.append(
                LockEntry(entry["optimizer"], dict(entry.get("params") or {}), dict(entry.get("state") or {}))
            )
        return cls(
            pipeline_file=str(pipeline.get("file", "")),
            pipeline_sha256=pipeline["sha256"],
            entries=tuple(parsed),
            recipe=str(data.get("recipe", "")),
            target=str(data.get("target", "")),
            speedup=data.get("speedup"),
            versions=dict(data.get("versions") or {}),
        )


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def current_versions() -> dict[str, str]:
    versions = {"accel": __version__, "torch": torch.__version__, "python": platform.python_version()}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return versions


def lock_file(path: str | Path) -> Path:
    """The lock file itself, given it or the folder that holds it."""
    path = Path(path)
    return path / LOCK_NAME if path.is_dir() else path


def write_lock(path: str | Path, lock: Lock) -> Path:
    target = lock_file(path)
    text = "# written by accel optimize; re-applied by accel.load(FILE, lock=...)\n"
    text += yaml.safe_dump(_plain(lock.to_dict()), sort_keys=False)
    write_text_atomic(target, text)
    return target


def read_lock(path: str | Path) -> Lock:
    target = lock_file(path)
    if not target.is_file():
        raise LockError(f"no such lock file: {target}", "pass the accel.lock.yaml written by accel optimize --out DIR")
    try:
        data = yaml.safe_load(target.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise LockError(
            f"{target} is corrupt: not valid YAML", "run accel optimize again to write a fresh lock"
        ) from exc
    return Lock.from_dict(data, where=str(target))


def load(path: str | os.PathLike, lock: str | os.PathLike | None = None, *, force: bool = False) -> Pipeline:
    """Load the Pipeline a file defines; with `lock`, re-apply the optimizations it records."""
    pipeline = load_pipeline(path)
    if lock is None:
        return pipeline
    return apply_lock(pipeline, Path(lock), Path(path), force=force)


def apply_lock(pipeline: Pipeline, lock_path: Path, pipeline_path: Path, force: bool = False) -> Pipeline:
    """Re-apply a lock's optimizations to the pipeline loaded from `pipeline_path`."""
    from accel.optimizing.optimizers import OPTIMIZERS, make_config

    target = lock_file(lock_path)
    lock = read_lock(target)
    actual = file_sha256(pipeline_path)
    if actual != lock.pipeline_sha256 and not force:
        raise LockError(
            f"{pipeline_path} changed since {target} was written (sha256 {actual[:12]}, lock has "
            f"{lock.pipeline_sha256[:12]})",
            "run accel optimize again, or force it (force=True, --force)",
        )
    for entry in lock.entries:
        try:
            optimizer = OPTIMIZERS.get(entry.optimizer)
            config = make_config(optimizer, entry.params, where=f"{target}: ")
        except AccelError as exc:
            raise LockError(f"{target}: {exc.message}", exc.hint) from exc
        pipeline = optimizer.restore(pipeline, config, entry.state, target.parent)
    return pipeline


def _plain(value: Any) -> Any:
    """Data safe_dump can write: tuples become lists, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)
    if hasattr(value, "item") and not isinstance(value, bytes):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
