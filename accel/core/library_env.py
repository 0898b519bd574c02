"""Where the libraries accel drives keep their files: in accel's cache folder, never in $TMPDIR.

Two libraries write outside the output folder on accel's behalf unless told otherwise:
- torch.compile (inductor) keeps its compiled kernels in `$TMPDIR/torchinductor_<user>` unless
  TORCHINDUCTOR_CACHE_DIR names a folder (read at each compile, so setting it before the first
  compile is enough); accel points it at `torchinductor/` under its cache root, where the kernels
  are still reused from one run to the next. Its precompiled headers ignore that variable (torch
  places them under `$TMPDIR` when `torch._inductor.codecache` is imported): once that module is
  imported, accel moves their folder to `precompiled_headers/` under the same cache.
- ONNX Runtime's telemetry client (started when onnxruntime is imported) writes a session id to
  `$TMPDIR/.ses`, and a device id and an event database under `$XDG_CACHE_HOME/Microsoft`, unless
  ORT_DISABLE_TELEMETRY is set; no setting moves those files, so accel sets it: the `.ses` is then
  never created (no run of accel sends ONNX Runtime telemetry either).

A variable the user set is left as it is: their choice, and their files.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType
from typing import Sequence

from accel.core.io import cache_root

INDUCTOR_CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"
ORT_TELEMETRY_VARIABLE = "ORT_DISABLE_TELEMETRY"
# The module that fixes inductor's precompiled-header folder at import, and its names for it.
INDUCTOR_CODECACHE = "torch._inductor.codecache"
HEADER_FOLDERS = {
    "_HEADER_DIR": "precompiled_headers",
    "_HEADER_LOCK_DIR": os.path.join("precompiled_headers", "locks"),
}


def library_env() -> dict[str, str]:
    """The variables accel gives the libraries it drives, each with the value accel would set."""
    return {
        INDUCTOR_CACHE_VARIABLE: str(cache_root() / "torchinductor"),
        ORT_TELEMETRY_VARIABLE: "1",
    }


def keep_library_files_in_cache() -> None:
    """Set each of `library_env()` in this process's environment (inherited by the processes it
    starts) unless the user set it. Call before onnxruntime is imported."""
    wanted = library_env()
    for name, value in wanted.items():
        os.environ.setdefault(name, value)
    if os.environ[INDUCTOR_CACHE_VARIABLE] == wanted[INDUCTOR_CACHE_VARIABLE]:
        _move_precompiled_headers(wanted[INDUCTOR_CACHE_VARIABLE])


def _move_precompiled_headers(folder: str) -> None:
    """Point inductor's precompiled headers into `folder`: now if its codecache is imported, else as
    soon as it is (importing it here would cost seconds that a run without compile never needs)."""
    module = sys.modules.get(INDUCTOR_CODECACHE)
    if module is not None:
        _point_headers(module, folder)
    elif not any(isinstance(finder, _HeadersMover) for finder in sys.meta_path):
        sys.meta_path.insert(0, _HeadersMover(folder))


def _point_headers(module: ModuleType, folder: str) -> None:
    for attribute, relative in HEADER_FOLDERS.items():
        if hasattr(module, attribute):
            setattr(module, attribute, os.path.join(folder, relative))


class _HeadersMover(importlib.abc.MetaPathFinder):
    """Finds nothing itself: on the import of inductor's codecache it lets the usual finders find the
    module and points the headers' folder into accel's cache once the module has run."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != INDUCTOR_CODECACHE:
            return None
        sys.meta_path.remove(self)  # once, and not asked again by the lookup below
        spec = importlib.util.find_spec(fullname)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run_module = loader.exec_module
        folder = self.folder

        def exec_module(module: ModuleType) -> None:
            run_module(module)
            _point_headers(module, folder)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec
