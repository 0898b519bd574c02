"""Crafted locks, script locks and baselines for the bad-input sweep (part B): an honest lock for
the user's pipe.py around a tiny ONNX export of a linear model (made once per test session), and
the setups and edits an attacker or a clumsy user would make to it. Each setup takes the user's
folder and writes user/out/accel.lock.yaml or user/b.json there."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import yaml

from tests.security.sweep import LINEAR

MARKER_CODE = "from pathlib import Path\nPath(__file__).with_name('MARKER').write_text('ran')\n"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@functools.lru_cache(maxsize=1)
def onnx_export() -> tuple[bytes, dict[str, Any]]:
    """An ONNX file of a Linear(4, 2) (exported once) and the onnx.runtime state naming it."""
    import tempfile

    import accel
    from accel.core.machine import describe_machine
    from accel.optimizing.optimizers import OPTIMIZERS, Context

    with tempfile.TemporaryDirectory(dir=os.environ.get("ACCEL_CACHE_DIR")) as folder:
        file = Path(folder) / "pipe.py"
        file.write_text(LINEAR)
        optimizer = OPTIMIZERS.get("onnx.runtime")
        applied = optimizer.apply(accel.load(file), optimizer.Config(), Context(describe_machine(), workdir=folder))
        return (Path(folder) / applied.state["onnx_file"]).read_bytes(), dict(applied.state, onnx_file="model.onnx")


def lock_data(user: Path, *, onnx: bool = True, script: bool = False) -> dict[str, Any]:
    """An honest lock for user/pipe.py (or user/train.py, a script lock), as accel writes it."""
    from accel.optimizing.lock import LockEntry
    from accel.optimizing.runtimes import current_versions

    name = "train.py" if script else "pipe.py"
    entries: list[dict[str, Any]] = []
    artifacts: dict[str, str] = {}
    if script:
        entries = [{"optimizer": "script.loader", "params": {"threads": 1}, "state": {"num_workers": 0}}]
    elif onnx:
        data, state = onnx_export()
        (user / "out").mkdir(exist_ok=True)
        (user / "out" / "model.onnx").write_bytes(data)
        entries = [{"optimizer": "onnx.runtime", "params": {}, "state": json.loads(json.dumps(state))}]
        artifacts = {"model.onnx": sha256(data)}
    return {
        "schema": "accel.lock/1",
        "kind": "script" if script else "pipeline",
        "pipeline": {"file": name, "sha256": sha256((user / name).read_bytes()), "path": name, "weights_sha256": None},
        "recipe": "latency",
        "target": "latency",
        "speedup": 1.5,
        "min_speedup": 1.1,
        "min_memory_saving": None,
        "max_slowdown": None,
        "versions": current_versions([LockEntry(e["optimizer"]) for e in entries]),
        "artifacts": artifacts,
        "optimizations": entries,
    }


def write_lock_text(user: Path, text: str | bytes) -> None:
    (user / "out").mkdir(exist_ok=True)
    (user / "out" / "accel.lock.yaml").write_bytes(text if isinstance(text, bytes) else text.encode())


def crafted(edit: Callable[[dict[str, Any], Path], None], **how: bool) -> Callable[[Path], None]:
    """A setup writing user/out/accel.lock.yaml: an honest lock, then `edit(data, user)`."""

    def setup(user: Path) -> None:
        data = lock_data(user, **how)
        edit(data, user)
        write_lock_text(user, yaml.safe_dump(data, sort_keys=False))

    return setup


def raw(text: str | bytes) -> Callable[[Path], None]:
    return lambda user: write_lock_text(user, text)


def setting(*path: str, value: Any) -> Callable[[dict[str, Any], Path], None]:
    """An edit that sets data[path...] = value (an int in the path indexes a list)."""

    def edit(data: dict[str, Any], user: Path) -> None:
        node: Any = data
        for key in path[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(path[-1]) if isinstance(node, list) else path[-1]] = value

    return edit


def removing(key: str) -> Callable[[dict[str, Any], Path], None]:
    return lambda data, user: data.pop(key)


def state_setting(key: str, value: Any) -> Callable[[dict[str, Any], Path], None]:
    return setting("optimizations", "0", "state", key, value=value)


def structure_class(name: str) -> Callable[[dict[str, Any], Path], None]:
    structure = {"kind": "mapping", "class": name, "keys": ["y"], "items": [{"kind": "tensor"}]}
    return state_setting("output_structure", structure)


def marker_module(data: dict[str, Any], user: Path) -> None:
    (user / "marker_mod.py").write_text(MARKER_CODE + "class Out(dict):\n    pass\n")
    structure_class("marker_mod:Out")(data, user)


def evil_elsewhere(data: dict[str, Any], user: Path) -> None:
    """The lock names a pipe.py elsewhere that writes MARKER; none lies beside the lock."""
    (user / "evil").mkdir()
    (user / "evil" / "pipe.py").write_text(MARKER_CODE + LINEAR)
    data["pipeline"]["path"] = str(user / "evil" / "pipe.py")
    data["pipeline"]["sha256"] = sha256((user / "evil" / "pipe.py").read_bytes())
    (user / "pipe.py").unlink()


def pipeline_file_dotdot(data: dict[str, Any], user: Path) -> None:
    evil_elsewhere(data, user)
    data["pipeline"]["file"] = "../evil/pipe.py"


def onnx_moved(where: str) -> Callable[[dict[str, Any], Path], None]:
    def edit(data: dict[str, Any], user: Path) -> None:
        shutil.copy(user / "out" / "model.onnx", user / "elsewhere.onnx")
        name = {"absolute": str(user / "elsewhere.onnx"), "dotdot": "../elsewhere.onnx"}[where]
        state_setting("onnx_file", name)(data, user)

    return edit


def onnx_unlisted(data: dict[str, Any], user: Path) -> None:
    shutil.copy(user / "out" / "model.onnx", user / "out" / "unlisted.onnx")
    state_setting("onnx_file", "unlisted.onnx")(data, user)


def onnx_truncated(rehash: bool) -> Callable[[dict[str, Any], Path], None]:
    def edit(data: dict[str, Any], user: Path) -> None:
        model = user / "out" / "model.onnx"
        model.write_bytes(model.read_bytes()[:100])
        if rehash:
            data["artifacts"]["model.onnx"] = sha256(model.read_bytes())

    return edit


def onnx_a_folder(data: dict[str, Any], user: Path) -> None:
    (user / "out" / "model.onnx").unlink()
    (user / "out" / "model.onnx").mkdir()


def onnx_symlink_out(data: dict[str, Any], user: Path) -> None:
    shutil.move(user / "out" / "model.onnx", user / "moved.onnx")
    (user / "out" / "model.onnx").symlink_to(user / "moved.onnx")


def cache_dir_elsewhere(data: dict[str, Any], user: Path) -> None:
    data["optimizations"] = [
        {
            "optimizer": "cache.decoded",
            "params": {"cache_dir": str(user / "elsewhere")},
            "state": {"stages": ["decode"]},
        }
    ]
    data["artifacts"] = {}


def lock_symlink(target: str) -> Callable[[Path], None]:
    def setup(user: Path) -> None:
        (user / "out").mkdir()
        (user / "out" / "accel.lock.yaml").symlink_to(target)

    return setup


REPLICATE = {"median_seconds": 0.001, "p90_seconds": 0.002, "p99_seconds": 0.003, "calls": 10, "batch_samples": 2}


def baseline(edit: Callable[[dict[str, Any]], None] | None = None, text: str | bytes | None = None):
    """A setup writing user/b.json: a well-formed baseline for pipe.py (then edited), or raw text."""

    def setup(user: Path) -> None:
        if text is not None:
            (user / "b.json").write_bytes(text if isinstance(text, bytes) else text.encode())
            return
        data = {
            "schema": "accel.baseline/2",
            "target": "pipe.py",
            "created_utc": "",
            "environment": {"device": "cpu", "threads": 2},
            "counts": None,
            "counts_fingerprint": {},
            "runs": [[dict(REPLICATE), dict(REPLICATE)]],
        }
        if edit is not None:
            edit(data)
        (user / "b.json").write_text(json.dumps(data))

    return setup


def replicate_field(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda data: data["runs"][0][0].update({key: value})


def git_repo(commit: bool) -> Callable[[Path], None]:
    def setup(user: Path) -> None:
        env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
        subprocess.run([*git, "init", "-q", str(user)], check=True, env=env)
        (user / "README").write_text("x")
        subprocess.run([*git, "-C", str(user), "add", "README", *(["pipe.py"] if commit else [])], check=True, env=env)
        subprocess.run([*git, "-C", str(user), "commit", "-qm", "c"], check=True, env=env)
        subprocess.run([*git, "-C", str(user), "status", "--porcelain"], check=True, env=env, capture_output=True)

    return setup
