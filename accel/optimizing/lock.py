"""The lock file: what `accel optimize` kept, so `accel.load(FILE, lock=...)` can re-apply it.

`accel.lock.yaml` (schema `accel.lock/1`) records the pipeline file's sha256, a digest of the
model's weights as the file loads them (retrained weights from a checkpoint do not change the file),
the sha256 of every artifact next to the lock (an ONNX file), the versions it was measured with,
and one entry per kept optimization in the order it is applied (optimizer name, recipe parameters,
and the state the optimizer needs to restore itself). An empty `optimizations` list is a valid
lock: nothing helped.

A lock written for a training script (`accel optimize SCRIPT`) has `kind: script` and one
`script.loader` entry holding the DataLoader settings `accel run SCRIPT --lock` applies; a lock
without `kind` is a pipeline lock, so locks written before scripts could be optimized read as before.

Loading checks all of it and says what changed: a changed file, a changed artifact, or changed
weights when an artifact holds a copy of them, is refused (it was built from the old ones); a different torch, or
another version of a runtime an entry's optimizer declares (`Optimizer.runtime_packages`: ONNX
Runtime and onnx for the onnx.* optimizers), than the lock was measured with is refused too, with
`accel verify` as the way to check whether the optimizations still pay on the new one. `force`
loads anyway.

The lock also records the keep thresholds its optimizations were kept at, so `accel verify` holds
them to the same test (accel.optimizing.decision). Both searches (a pipeline's recipe engine, a
script's DataLoader search) build their lock with accel.optimizing.locking.build_lock.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch
import yaml

from accel.core.errors import AccelError, LockError
from accel.core.hashing import content_digest
from accel.core.io import plain_data, write_text_atomic
from accel.core.loading import load_pipeline
from accel.core.pipeline import Pipeline
from accel.core.profiler_notes import quietly
from accel.optimizing.lock_files import FORCE_HINT, REWRITE_HINT, file_sha256, resolve_lock_file
from accel.optimizing.lock_schema import check_entry, check_lock_fields
from accel.optimizing.runtimes import runtime_changes

LOCK_SCHEMA = "accel.lock/1"
LOCK_NAME = "accel.lock.yaml"
PIPELINE_LOCK, SCRIPT_LOCK = "pipeline", "script"
LOCK_KINDS = (PIPELINE_LOCK, SCRIPT_LOCK)
# accel's locks are a few kilobytes (one entry per kept optimization); a file past this is not
# one, and parsing megabytes of YAML would take minutes before saying so.
MAX_LOCK_BYTES = 1_000_000


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
    # Added later; older locks read without them (nothing to check).
    weights_sha256: str | None = None
    artifacts: dict[str, str] = dataclasses.field(default_factory=dict)  # file name -> sha256
    pipeline_path: str = ""  # where the pipeline file was, for `accel verify`
    min_speedup: float | None = None  # the recipe's keep threshold, for `accel verify`
    kind: str = PIPELINE_LOCK  # what the lock is re-applied to: a pipeline (accel.load) or a script (accel run)
    # The memory target's keep thresholds, for `accel verify`; None in older locks (the defaults).
    min_memory_saving: float | None = None
    max_slowdown: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in LOCK_KINDS:
            raise ValueError(f"kind must be one of {LOCK_KINDS}, got {self.kind!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "kind": self.kind,
            "pipeline": {
                "file": self.pipeline_file,
                "sha256": self.pipeline_sha256,
                "path": self.pipeline_path,
                "weights_sha256": self.weights_sha256,
            },
            "recipe": self.recipe,
            "target": self.target,
            "speedup": self.speedup,
            "min_speedup": self.min_speedup,
            "min_memory_saving": self.min_memory_saving,
            "max_slowdown": self.max_slowdown,
            "versions": dict(self.versions),
            "artifacts": dict(self.artifacts),
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
        check_lock_fields(data, where)
        pipeline = data.get("pipeline")
        entries = data.get("optimizations")
        kind = data.get("kind", PIPELINE_LOCK)
        if kind not in LOCK_KINDS:
            raise LockError(
                f"{where} is corrupt: kind {kind!r} is not one of {', '.join(LOCK_KINDS)}",
                "run accel optimize again to write a fresh lock",
            )
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
            check_entry(entry, i + 1, where)
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
            weights_sha256=pipeline.get("weights_sha256"),
            artifacts={str(k): str(v) for k, v in (data.get("artifacts") or {}).items()},
            pipeline_path=str(pipeline.get("path") or ""),
            min_speedup=data.get("min_speedup"),
            kind=kind,
            min_memory_saving=data.get("min_memory_saving"),
            max_slowdown=data.get("max_slowdown"),
        )


def weights_sha256(pipeline: Pipeline) -> str | None:
    """A digest of the model's weights (parameters and buffers); None for a model that is not a
    torch module."""
    model = pipeline.model
    if not isinstance(model, torch.nn.Module):
        return None
    return content_digest({name: tensor for name, tensor in model.state_dict().items()})


def artifact_files(folder: str | Path, entries: tuple[LockEntry, ...]) -> list[str]:
    """The files in `folder` the entries need: each one their state names (`*_file` keys) and, for
    an ONNX file, the external data files its initializers point to (the dynamo exporter writes a
    model's weights to `NAME.onnx.data` beside it)."""
    found: list[str] = []
    for entry in entries:
        for key, value in entry.state.items():
            if key.endswith("_file") and isinstance(value, str) and (Path(folder) / value).is_file():
                for name in [value, *_external_data(Path(folder) / value)]:
                    if name not in found and (Path(folder) / name).is_file():
                        found.append(name)
    return found


def _external_data(path: Path) -> list[str]:
    if path.suffix != ".onnx":
        return []
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    locations = []
    for tensor in graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in tensor.external_data if e.key == "location"), None)
            if location and location not in locations:
                locations.append(location)
    return locations


def artifact_digests(folder: str | Path, entries: tuple[LockEntry, ...]) -> dict[str, str]:
    """sha256 of each file the entries need in `folder` (artifact_files)."""
    return {name: file_sha256(Path(folder) / name) for name in artifact_files(folder, entries)}


def changed_versions(lock: Lock) -> list[str]:
    """'torch 2.13.0 -> 2.14.0' for each runtime the lock's entries depend on (torch, and what their
    optimizers declare in runtime_packages) whose version differs from what the lock was measured with."""
    return runtime_changes(lock.versions, lock.entries) if lock.entries else []


def lock_file(path: str | Path) -> Path:
    """The lock file itself, given it or the folder that holds it."""
    path = Path(path)
    return path / LOCK_NAME if path.is_dir() else path


def write_lock(path: str | Path, lock: Lock) -> Path:
    target = lock_file(path)
    how = "accel run SCRIPT --lock LOCK" if lock.kind == SCRIPT_LOCK else "accel.load(FILE, lock=...)"
    text = f"# written by accel optimize; re-applied by {how}\n"
    text += yaml.safe_dump(plain_data(lock.to_dict()), sort_keys=False)
    write_text_atomic(target, text)
    return target


def read_lock(path: str | Path) -> Lock:
    target = lock_file(path)
    if not target.is_file():
        raise LockError(f"no such lock file: {target}", "pass the accel.lock.yaml written by accel optimize --out DIR")
    size = target.stat().st_size
    if size > MAX_LOCK_BYTES:
        raise LockError(
            f"{target} is {size / 1e6:.1f} MB: too big for an accel lock (at most {MAX_LOCK_BYTES // 1_000_000} MB)",
            "pass the accel.lock.yaml that accel optimize wrote",
        )
    try:
        data = yaml.safe_load(target.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise LockError(f"{target} is corrupt: not UTF-8 text", REWRITE_HINT) from exc
    except (yaml.YAMLError, RecursionError) as exc:
        raise LockError(f"{target} is corrupt: not valid YAML", REWRITE_HINT) from exc
    return Lock.from_dict(data, where=str(target))


@quietly
def load(path: str | os.PathLike, lock: str | os.PathLike | None = None, *, force: bool = False) -> Pipeline:
    """Load the Pipeline a file defines; with `lock`, re-apply the optimizations it records."""
    if lock is not None:  # a script's lock is refused before the file is loaded (it defines no pipeline)
        refuse_script_lock(read_lock(Path(lock)), lock_file(Path(lock)))
    pipeline = load_pipeline(path)
    if lock is None:
        return pipeline
    return apply_lock(pipeline, Path(lock), Path(path), force=force)


def refuse_script_lock(lock: Lock, target: Path) -> None:
    if lock.kind == SCRIPT_LOCK:
        raise LockError(
            f"{target} holds DataLoader settings for the script {lock.pipeline_file}, not a pipeline's optimizations",
            f"run the script with them: accel run {lock.pipeline_file} --lock {target}",
        )


def check_lock(
    lock: Lock, target: Path, pipeline: Pipeline | None, pipeline_path: Path, *, versions: bool = True
) -> None:
    """Refuse, saying what changed, when the lock no longer describes what is loaded (`pipeline`
    None: a script, whose weights the lock does not record)."""
    rerun = FORCE_HINT
    check_pipeline_file(lock, target, pipeline_path)
    if lock.kind == PIPELINE_LOCK:  # a script lock's entry is a DataLoader setting, not an optimizer
        for entry in lock.entries:
            entry_config(entry, target)
    # Artifacts (an exported ONNX file) hold a copy of the weights; optimizations without one are
    # re-applied to whatever weights the file loads now.
    if pipeline is not None and lock.weights_sha256 is not None and lock.artifacts:
        weights = weights_sha256(pipeline)
        if weights != lock.weights_sha256:
            raise LockError(
                f"the model's weights changed since {target} was written (digest {str(weights)[:12]}, lock has "
                f"{lock.weights_sha256[:12]}): {', '.join(sorted(lock.artifacts))} was built from the old weights",
                rerun,
            )
    check_artifacts(lock, target)
    changes = changed_versions(lock) if versions else []
    if changes:
        raise LockError(
            f"{target} was measured with other versions ({'; '.join(changes)}): what paid then may not now",
            f"run `accel verify {target}` to re-time it here, then accel optimize again or force it (accel.load(..., force=True))",
        )


def apply_lock(
    pipeline: Pipeline, lock_path: Path, pipeline_path: Path, force: bool = False, *, check_versions: bool = True
) -> Pipeline:
    """Re-apply a lock's optimizations to the pipeline loaded from `pipeline_path`."""
    target = lock_file(lock_path)
    lock = read_lock(target)
    refuse_script_lock(lock, target)
    if not force:
        check_lock(lock, target, pipeline, pipeline_path, versions=check_versions)
    else:  # forced past changed files, never past files the lock does not list
        check_entry_files(target, lock.entries, lock.artifacts, check_digest=False)
    return apply_entries(pipeline, lock.entries, target)


def apply_entries(pipeline: Pipeline, entries: tuple[LockEntry, ...], target: Path) -> Pipeline:
    """Restore each entry in order (artifacts are read next to the lock file `target`)."""
    for entry in entries:
        optimizer, config = entry_config(entry, target)
        check_entry_files(target, (entry,), None, external_data=False)  # the lock's own check parsed them
        pipeline = optimizer.restore(pipeline, config, entry.state, target.parent)
    return pipeline


def entry_config(entry: LockEntry, target: Path) -> tuple[Any, Any]:
    """The registered optimizer an entry names and its Config from the entry's params; an unknown
    name or a bad parameter is the lock's error (a LockError), whoever reads the lock."""
    from accel.optimizing.optimizers import OPTIMIZERS, make_config

    try:
        optimizer = OPTIMIZERS.get(entry.optimizer)
        return optimizer, make_config(optimizer, entry.params)
    except AccelError as exc:
        raise LockError(f"{target}: {exc.message}", exc.hint) from exc


def check_pipeline_file(lock: Lock, target: Path, pipeline_path: Path) -> None:
    """Refuse a pipeline file other than the one the lock was written for (by its sha256)."""
    actual = file_sha256(pipeline_path)
    if actual != lock.pipeline_sha256 and lock.pipeline_file and Path(lock.pipeline_file).name != pipeline_path.name:
        raise LockError(
            f"{target} is a lock for {Path(lock.pipeline_file).name}, not {pipeline_path.name}",
            f"load {Path(lock.pipeline_file).name} with it, or run accel optimize {pipeline_path.name} for a lock of its own",
        )
    if actual != lock.pipeline_sha256:
        raise LockError(
            f"{pipeline_path} changed since {target} was written (sha256 {actual[:12]}, lock has "
            f"{lock.pipeline_sha256[:12]})",
            FORCE_HINT,
        )


def check_artifacts(lock: Lock, target: Path) -> None:
    """Each file the lock lists is inside its folder with the sha256 recorded, and each file its
    entries name is one of them (lock_files.resolve_lock_file)."""
    for name in lock.artifacts:
        resolve_lock_file(target.parent, name, f"artifacts entry {name!r}", lock.artifacts)
    check_entry_files(target, lock.entries, lock.artifacts, check_digest=False)  # hashed just above


def check_entry_files(
    target: Path,
    entries: tuple[LockEntry, ...],
    artifacts: dict[str, str] | None,
    *,
    check_digest: bool = True,
    external_data: bool = True,
) -> None:
    """Resolve every file the entries name (their state's `*_file` keys, and with `external_data`
    the files an ONNX file's initializers point to) as lock_files does: inside the lock's folder,
    and listed in `artifacts` (None: entries an optimize run made, whose files are not hashed yet)."""
    for number, entry in enumerate(entries, start=1):
        for key, value in entry.state.items():
            if not key.endswith("_file"):
                continue
            field = f"optimization {number} ({entry.optimizer}) state.{key}"
            path = resolve_lock_file(target.parent, value, field, artifacts, check_digest=check_digest)
            for location in _lock_external_data(path, field) if external_data else []:
                resolve_lock_file(
                    target.parent, location, f"{field}'s external data", artifacts, check_digest=check_digest
                )


def _lock_external_data(path: Path, field: str) -> list[str]:
    """_external_data of a file a lock names: one that does not parse is the lock's error."""
    try:
        return _external_data(path)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and onnx's own: the file is not ONNX
        raise LockError(
            f"{path} (the lock's {field}) is not an ONNX file: {type(exc).__name__}", "run accel optimize again"
        ) from exc
