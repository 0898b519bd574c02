"""The runtime versions a lock records and checks, from what its optimizers declare.

torch's version matters to every lock; any other runtime only where an entry's optimizer names it
in `Optimizer.runtime_packages` (the onnx.* optimizers: onnxruntime and onnx). A plugin declares
its own runtimes: no list here names them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import platform
from typing import Any, Iterable

import torch

from accel._version import __version__

# Recorded and checked for every lock, whatever its entries.
IMPLICIT_RUNTIMES = ("torch",)


def runtime_packages(entries: Iterable[Any]) -> tuple[str, ...]:
    """The distributions whose version the entries (objects with `optimizer`) depend on: torch,
    and what each entry's optimizer declares. An entry no registered optimizer has (a script's
    DataLoader setting) declares nothing; re-applying an unknown optimizer fails on its own."""
    from accel.optimizing.optimizers import OPTIMIZERS

    names = list(IMPLICIT_RUNTIMES)
    for entry in entries:
        declared = OPTIMIZERS.get(entry.optimizer).runtime_packages if entry.optimizer in OPTIMIZERS else ()
        names.extend(name for name in declared if name not in names)
    return tuple(names)


def installed_version(distribution: str) -> str | None:
    """The installed version of a distribution, else its module's __version__ (onnxruntime-gpu
    installs the module onnxruntime); None when neither is there."""
    if distribution == "torch":
        return str(torch.__version__)
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        module = importlib.import_module(distribution)
    except ImportError:
        return None
    version = getattr(module, "__version__", None)
    return str(version) if version else None


def current_versions(entries: Iterable[Any] = ()) -> dict[str, str]:
    """accel's, Python's, and the installed version of every runtime the entries depend on."""
    versions = {"accel": __version__, "python": platform.python_version()}
    for name in runtime_packages(entries):
        version = installed_version(name)
        if version is not None:
            versions[name] = version
    return versions


def runtime_changes(recorded: dict[str, str], entries: Iterable[Any]) -> list[str]:
    """'torch 2.13.0 -> 2.14.0' for each runtime the entries depend on whose installed version is
    not the one `recorded` (a runtime not recorded, as in a lock older than its declaration, is
    not checked)."""
    changes = []
    for name in runtime_packages(entries):
        was, now = recorded.get(name), installed_version(name)
        if was is not None and was != now:
            changes.append(f"{name} {was} -> {now or 'not installed'}")
    return changes
