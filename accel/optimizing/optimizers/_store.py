"""The on-disk store of decoded samples that `cache.decoded` fills and reads.

Layout under the cache directory (default `decoded/` under accel's cache root, accel.core.io.cache_root):

    <namespace>/meta.json          what the namespace caches (stage names, accel version)
    <namespace>/<key[:2]>/<key>.rec  one record per sample

A namespace is the hash of the cached code (decode, and transform when it is cached too) and the accel
version; a key is the hash of the namespace and of the raw sample's content. A changed sample or a
changed function therefore looks up a different key: a stale record is never found.

A record is a fixed prefix (magic, the header's length, the sha256 of the header and the array
bytes), a small JSON header (the structure of the sample and, for each array in it, dtype, shape
and byte offset) and the raw array bytes, each aligned to 64 bytes, so the arrays are read back
with `numpy.memmap` without copying or unpickling anything. A record is data, never trusted: a
dtype outside a fixed set of numbers (an object dtype would be pointers), a checksum that does not
match (a flipped byte), a truncated file or a garbled header make it a miss, and it is removed. Records are written to a temporary
file, flushed to disk, then renamed into place: the rename is the index update, so a build killed at
any point leaves either a whole record or none (stray temporary files are swept on open). A record's
header also lists the files decode read to build it (path, size, mtime_ns, inode), so a hit can be
checked against them.

The cache directory may be shared with other tools: clean-up, eviction and `clear` touch only the
store's own files, told by their names (a namespace folder named like one, holding meta.json; records
named <64 hex digits>.rec; temporary files named as core.io's atomic writer names a record's, which
are unique per writer).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from accel.core.errors import CacheError
from accel.core.hashing import digest
from accel.core.io import cache_root, unlink_quietly, write_bytes_atomic

# Version 2 added the checksum: a version-1 record reads as not the store's (a miss).
MAGIC = b"ACCLREC2"
DIGEST_BYTES = 32  # sha256 (core.hashing.digest) of the header and the array bytes
PREFIX_BYTES = len(MAGIC) + 8 + DIGEST_BYTES
# The dtypes a record may hold (flatten_sample stores only numbers); any other in a header is corrupt.
RECORD_DTYPES = frozenset(
    np.dtype(t).str
    for t in (
        np.bool_,
        np.int8,
        np.uint8,
        np.int16,
        np.uint16,
        np.int32,
        np.uint32,
        np.int64,
        np.uint64,
        np.float16,
        np.float32,
        np.float64,
    )
)
ALIGN_BYTES = 64
RECORD_SUFFIX = ".rec"
# Evict down to this share of the limit, so a full cache does not evict on every single write.
EVICT_TO_SHARE = 0.9
# Temporary files older than this belong to a dead writer (a live one renames within milliseconds).
STALE_TEMP_SECONDS = 60.0
# The store's own names: namespace folders (code digest, '-', version digest), shard folders and records.
NAMESPACE_NAME = re.compile(r"^[0-9a-f]{16}-[0-9a-f]{8}$")
SHARD_NAME = re.compile(r"^[0-9a-f]{2}$")
RECORD_NAME = re.compile(r"^[0-9a-f]{64}\.rec$")
TEMP_NAME = re.compile(r"^\.[0-9a-f]{64}\.rec\..+\.tmp$")
META_NAME = "meta.json"


class CorruptRecord(CacheError):
    """A record that is not whole, or not what the store writes: read as a miss."""


def default_cache_dir() -> Path:
    return cache_root() / "decoded"


# --- flattening a sample into arrays ---------------------------------------------------------------
def flatten_sample(sample: Any) -> tuple[Any, list[np.ndarray]]:
    """A JSON-able structure with leaf references, and the arrays; CacheError for anything else."""
    arrays: list[np.ndarray] = []

    def walk(value: Any, where: str) -> Any:
        if isinstance(value, torch.Tensor):
            if value.is_sparse or value.dtype in (torch.bfloat16,) or value.is_complex():
                raise CacheError(
                    f"sample part {where} is a {value.dtype} tensor the store cannot hold",
                    "cache samples of plain float, int or bool tensors",
                )
            arrays.append(value.detach().cpu().contiguous().numpy())
            return {"t": "tensor", "i": len(arrays) - 1}
        if isinstance(value, np.ndarray):
            if value.dtype == object:
                raise CacheError(f"sample part {where} is an object array", "cache numeric arrays only")
            arrays.append(np.ascontiguousarray(value))
            return {"t": "array", "i": len(arrays) - 1}
        if isinstance(value, tuple):
            return {"t": "tuple", "v": [walk(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return {"t": "list", "v": [walk(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, Mapping):
            if not all(isinstance(k, str) for k in value):
                raise CacheError(f"sample part {where} is a dict with non-string keys", "use string keys")
            return {"t": "dict", "v": {k: walk(v, f"{where}[{k!r}]") for k, v in value.items()}}
        if isinstance(value, (bool, int, float)) or value is None:
            return {"t": "scalar", "v": value}
        raise CacheError(
            f"sample part {where} is a {type(value).__name__}, not a tensor, array, or a tuple, list or dict of them",
            "make decode return tensors or numpy arrays",
        )

    return walk(sample, "sample"), arrays


def unflatten_sample(structure: Any, arrays: list[np.ndarray]) -> Any:
    kind = structure["t"]
    if kind == "tensor":
        return torch.from_numpy(arrays[structure["i"]])
    if kind == "array":
        return arrays[structure["i"]]
    if kind == "tuple":
        return tuple(unflatten_sample(v, arrays) for v in structure["v"])
    if kind == "list":
        return [unflatten_sample(v, arrays) for v in structure["v"]]
    if kind == "dict":
        return {k: unflatten_sample(v, arrays) for k, v in structure["v"].items()}
    return structure["v"]


# --- the store ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class NamespaceInfo:
    namespace: str
    entries: int
    bytes_on_disk: int
    meta: dict[str, Any]


class DecodedStore:
    """Records of one namespace under `root`, with a size limit over the whole root."""

    def __init__(self, root: Path, namespace: str, *, max_bytes: int, meta: dict[str, Any] | None = None) -> None:
        if max_bytes <= 0:
            raise CacheError(f"cache size limit must be > 0 bytes, got {max_bytes}", "pass max_bytes=2**30 or so")
        self.root = Path(root)
        self.namespace = namespace
        self.max_bytes = int(max_bytes)
        self.directory = self.root / namespace
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(
                f"cannot create the cache directory {self.directory}: {exc.strerror}", "pass a writable cache_dir"
            ) from exc
        if not NAMESPACE_NAME.match(namespace):
            raise CacheError(f"'{namespace}' is not a cache namespace name", "namespaces are made by cache.decoded")
        if not (self.directory / META_NAME).exists():
            write_bytes_atomic(self.directory / META_NAME, json.dumps(meta or {}, sort_keys=True).encode())
        sweep_temporaries(self.root)
        self._bytes_on_disk = total_bytes(self.root)

    def path_of(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}{RECORD_SUFFIX}"

    def get(self, key: str) -> Any | None:
        """The sample stored under `key`, memory-mapped; None when absent."""
        found = self.get_with_reads(key)
        return None if found is None else found[0]

    def get_with_reads(self, key: str) -> tuple[Any, list[dict[str, Any]]] | None:
        """The sample and the files decode read to build it; None when absent."""
        path = self.path_of(key)
        try:
            return read_record_with_reads(path)
        except FileNotFoundError:
            return None
        except CorruptRecord:  # decoded again and stored whole on the miss
            unlink_quietly(path)
            return None

    def put(self, key: str, sample: Any, reads: list[dict[str, Any]] | None = None) -> int:
        """Store a sample (atomically), with the files read to build it; returns the record's bytes."""
        structure, arrays = flatten_sample(sample)
        path = self.path_of(key)
        path.parent.mkdir(exist_ok=True)
        size = write_record(path, structure, arrays, reads or [])
        self._bytes_on_disk += size
        if self._bytes_on_disk > self.max_bytes:
            self._bytes_on_disk = evict(self.root, int(self.max_bytes * EVICT_TO_SHARE), keep=path)
        return size

    def keys(self) -> set[str]:
        return {p.stem for p in self.directory.glob(f"*/*{RECORD_SUFFIX}")}


def write_record(
    path: Path, structure: Any, arrays: list[np.ndarray], reads: list[dict[str, Any]] | None = None
) -> int:
    layout: list[dict[str, Any]] = []
    header = {"structure": structure, "arrays": layout, "reads": reads or []}
    # Offsets depend on the header's length; lay out after a generous fixed header size.
    offset = 0
    for array in arrays:
        layout.append({"dtype": array.dtype.str, "shape": list(array.shape), "offset": offset})
        offset += _aligned(array.nbytes)
    header_bytes = json.dumps(header, sort_keys=True).encode()
    data_start = _aligned(PREFIX_BYTES + len(header_bytes))
    buffer = bytearray(data_start + offset)
    for array, entry in zip(arrays, layout):
        start = data_start + entry["offset"]
        buffer[start : start + array.nbytes] = np.ascontiguousarray(array).tobytes()
    checksum = bytes.fromhex(digest(header_bytes, _buffer(buffer)[data_start:]))
    head = MAGIC + struct.pack("<Q", len(header_bytes)) + checksum + header_bytes
    buffer[: len(head)] = head
    write_bytes_atomic(path, bytes(buffer))
    return len(buffer)


def read_record(path: Path) -> Any:
    return read_record_with_reads(path)[0]


def read_record_with_reads(path: Path) -> tuple[Any, list[dict[str, Any]]]:
    """The sample in a record and the files read to build it; CorruptRecord when the record is not
    whole (truncated, a byte changed) or not the store's (a dtype it never writes, a bad header)."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(PREFIX_BYTES)
        if len(head) < PREFIX_BYTES or head[: len(MAGIC)] != MAGIC:
            raise CorruptRecord(f"cache record {path} is not an accel record", "run `accel cache clear`")
        (length,) = struct.unpack("<Q", head[len(MAGIC) : len(MAGIC) + 8])
        data_start = _aligned(PREFIX_BYTES + length)
        if data_start > size:
            raise CorruptRecord(f"cache record {path} is truncated", "run `accel cache clear`")
        header_bytes = handle.read(length)
    # Copy-on-write map: pages are read lazily and the tensors built on it are writable.
    region = (
        np.memmap(path, dtype=np.uint8, mode="c", offset=data_start, shape=(size - data_start,))
        if size > data_start
        else np.zeros(0, np.uint8)
    )
    if bytes.fromhex(digest(header_bytes, _buffer(region))) != head[len(MAGIC) + 8 :]:
        raise CorruptRecord(f"cache record {path} does not match its checksum", "run `accel cache clear`")
    try:
        header = json.loads(header_bytes)
        arrays = [_record_array(region, entry) for entry in header["arrays"]]
        return unflatten_sample(header["structure"], arrays), list(header.get("reads", []))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, RecursionError) as exc:
        raise CorruptRecord(f"cache record {path} has a bad header: {exc}", "run `accel cache clear`") from exc


def _buffer(data: Any) -> bytes:
    """The bytes of a bytearray or array as the hasher takes them, without copying them."""
    return cast(bytes, memoryview(data).cast("B"))


def _record_array(region: np.ndarray, entry: dict[str, Any]) -> np.ndarray:
    """One array of a record: a view of its bytes, of a dtype and shape the header must get right."""
    if entry["dtype"] not in RECORD_DTYPES:
        raise ValueError(f"dtype {entry['dtype']!r} is not one the store writes")
    shape = tuple(entry["shape"])
    offset = entry["offset"]
    if not all(type(d) is int and d >= 0 for d in (*shape, offset)):
        raise ValueError(f"shape {shape} or offset {offset} is not made of counts")
    dtype = np.dtype(entry["dtype"])
    nbytes = dtype.itemsize * math.prod(shape)
    if offset + nbytes > len(region):
        raise ValueError(f"an array of {nbytes} bytes at {offset} ends past the record")
    if nbytes == 0:
        return np.zeros(shape, dtype)
    return region[offset : offset + nbytes].view(dtype).reshape(shape)


def _aligned(nbytes: int) -> int:
    return (nbytes + ALIGN_BYTES - 1) // ALIGN_BYTES * ALIGN_BYTES


def namespaces(root: Path) -> list[Path]:
    """The store's namespace folders under `root` (other folders there are not the store's)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p for p in root.iterdir() if p.is_dir() and NAMESPACE_NAME.match(p.name) and (p / META_NAME).is_file()
    )


def _own_files(directory: Path, pattern: re.Pattern) -> list[Path]:
    return [
        path
        for shard in directory.iterdir()
        if shard.is_dir() and SHARD_NAME.match(shard.name)
        for path in shard.iterdir()
        if pattern.match(path.name)
    ]


def records(root: Path) -> list[Path]:
    return [path for directory in namespaces(root) for path in _own_files(directory, RECORD_NAME)]


def total_bytes(root: Path) -> int:
    total = 0
    for path in records(root):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            continue
    return total


def sweep_temporaries(root: Path, older_than_seconds: float = STALE_TEMP_SECONDS) -> int:
    """Remove temporary records a killed writer left behind (the store's own, by name); returns how many."""
    now = time.time()
    removed = 0
    for directory in namespaces(root):
        for temp in _own_files(directory, TEMP_NAME):
            try:
                if now - temp.stat().st_mtime >= older_than_seconds:
                    temp.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
    return removed


def evict(root: Path, target_bytes: int, keep: Path | None = None) -> int:
    """Remove the least recently written records until the store holds at most `target_bytes`."""
    entries = []
    for path in records(root):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        entries.append((stat.st_mtime, stat.st_size, path))
    entries.sort(key=lambda e: e[0])
    total = sum(size for _, size, _ in entries)
    for _, size, path in entries:
        if total <= target_bytes:
            break
        if path == keep:
            continue
        path.unlink(missing_ok=True)
        total -= size
    return total


def describe(root: Path) -> list[NamespaceInfo]:
    """One line of facts per namespace under `root` (for `accel cache info`)."""
    infos = []
    for directory in namespaces(root):
        paths = _own_files(directory, RECORD_NAME)
        size = sum(p.stat().st_size for p in paths if p.exists())
        try:
            meta = json.loads((directory / META_NAME).read_text())
        except (OSError, ValueError):
            meta = {}
        infos.append(NamespaceInfo(directory.name, len(paths), size, meta))
    return infos


def clear(root: Path, namespace: str | None = None) -> int:
    """Remove the store's records (of one namespace, or all) and nothing else; returns how many
    records were removed. A folder is removed only when that leaves it empty."""
    root = Path(root)
    own = namespaces(root)
    if namespace is not None:
        own = [d for d in own if d.name == namespace]
        if not own:
            raise CacheError(f"no cache namespace '{namespace}' under {root}", "run `accel cache info` to list them")
    removed = 0
    for directory in own:
        for path in _own_files(directory, RECORD_NAME) + _own_files(directory, TEMP_NAME):
            removed += path.suffix == RECORD_SUFFIX
            path.unlink(missing_ok=True)
        (directory / META_NAME).unlink(missing_ok=True)
        for folder in sorted((p for p in directory.iterdir() if p.is_dir()), reverse=True) + [directory]:
            try:
                folder.rmdir()
            except OSError:  # not empty: someone else's files are in it
                pass
    return removed
