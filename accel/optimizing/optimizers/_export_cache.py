"""One export per model per search: an ONNX file exported once is copied for the next candidate
that exports the same model the same way.

`onnx.int8_dynamic`, its safer variants (per channel, reduced range) and `onnx.fusions_int8` each
begin from the same float32 export of the same model; exporting BERT-base again for every variant
cost 60-90 s a trial at load 14 (the export is most of a trial's one-time cost). An export is reused
only while the model is the very object that was exported (a weak reference) with every parameter
and buffer unchanged (the same storage, the same in-place version counter), for the same opset,
exporter, example shapes and dynamic axes, and while the first export's file is still there; an
export that wrote external-data files beside its .onnx is not kept (copying the .onnx alone would
break it).

A graph made from such an export (ORT's transformer fusions over it: 19-30 s on GPT-2's decode
step, most of it ORT's symbolic shape inference copying the weights) is kept the same way, under
the export's settings and its own (`origin`: what export wrote a file): `onnx.fusions_int8`'s
rungs and the fused generate loops then fuse once per search.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import shutil
import weakref
from pathlib import Path
from typing import Any

import torch

# Exports kept at once (each a file in the search's work folder): the model slot's candidates of one search.
MAX_KEPT = 4
# Where the copies are kept: a folder of the work folder, removed with it.
KEPT_FOLDER = ".exports"
_counter = itertools.count()


@dataclasses.dataclass(frozen=True)
class _Kept:
    model: weakref.ReferenceType
    fingerprint: tuple
    settings: str
    path: Path
    io: dict[str, Any]


_kept: list[_Kept] = []
# The settings of the export each file in a work folder was written by (or copied from): what a
# graph derived from that file is kept under.
_origins: dict[str, str] = {}


def fingerprint(model: Any) -> tuple:
    """What changes when the model's weights change: each tensor's storage and in-place version."""
    if not isinstance(model, torch.nn.Module):
        return (id(model),)
    tensors = itertools.chain(model.parameters(), model.buffers())
    return tuple((t.data_ptr(), t._version, tuple(t.shape)) for t in tensors)


def reuse(model: Any, settings: str, path: Path) -> dict[str, Any] | None:
    """The recorded I/O of an earlier export of this model with these settings, its file copied to
    `path`; None when there is none to reuse."""
    for kept in list(_kept):
        if kept.model() is not model or kept.settings != settings:
            continue
        if kept.fingerprint != fingerprint(model) or not kept.path.is_file():
            _kept.remove(kept)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kept.path, path)
        _origins[str(path)] = settings
        return copy.deepcopy(kept.io)
    return None


def origin(path: Path) -> str | None:
    """The settings of the export that wrote `path` (this process, a kept export or a copy of
    one), or None; read once: the file is about to be made into something else."""
    return _origins.pop(str(path), None)


def remember(model: Any, settings: str, path: Path, io: dict[str, Any], files_before: set[str]) -> None:
    """Keep a copy of a fresh export beside it, for the next candidate exporting the same model."""
    _origins[str(path)] = settings
    written = {p.name for p in path.parent.iterdir()} - files_before - {path.name}
    if written or not path.is_file():
        return  # external data beside the .onnx (a model past 2 GB): not copied as one file
    try:
        reference = weakref.ref(model)
    except TypeError:
        return
    copy = path.parent / KEPT_FOLDER / f"{next(_counter)}{path.suffix}"
    copy.parent.mkdir(exist_ok=True)
    shutil.copyfile(path, copy)
    _kept.append(_Kept(reference, fingerprint(model), settings, copy, dict(io)))
    while len(_kept) > MAX_KEPT:
        _kept.pop(0).path.unlink(missing_ok=True)
