"""The one content hasher: what the repeat analyzer counts and what the caches key on.

`content_digest` hashes a value's content (bytes, text, numbers, arrays, tensors, files named by
path, and tuples, lists and dicts of them); the repeated-inputs analyzer and `cache.results` use
the same function, so the repeat rate accel predicts is the hit rate the cache gets. The digests
of files, texts and code that locks and caches key on are made here too, so every part of accel
hashes one way.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Mapping
from typing import Any, Callable

import numpy as np
import torch

# Bytes read at a time when hashing a file (an ONNX file's weights can be gigabytes).
FILE_BLOCK_BYTES = 1 << 20
# A string this long is text, not a file name: no file is looked for.
MAX_PATH_CHARS = 4096


def new_sha256() -> Any:
    """An empty sha256 hasher, for a caller that feeds its parts one by one (a code fingerprint)."""
    return hashlib.sha256()


def text_sha256(text: str) -> str:
    """sha256 of a text's UTF-8 bytes, as hex."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's content, as hex, read in blocks."""
    h = hashlib.sha256()
    _feed_file(h, os.fspath(path))
    return h.hexdigest()


def short_digest(text: str, hex_chars: int = 16) -> str:
    """A short digest of a text (blake2b, `hex_chars` hex digits): a cache file's name, not a
    content check."""
    return hashlib.blake2b(text.encode(), digest_size=hex_chars // 2).hexdigest()


def content_hash(value: Any) -> str:
    """`content_digest`, or for content it cannot hash faithfully a digest of the value's repr
    (distinct objects then never count as repeats)."""
    return content_digest(value) or digest(b"repr", repr(value).encode("utf-8", "surrogatepass"))


def digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(struct.pack("<Q", len(part)))
        h.update(part)
    return h.hexdigest()


def content_digest(value: Any) -> str | None:
    """A hash of a raw sample's content (bytes, text, numbers, arrays, tensors, files named by path,
    and tuples, lists and dicts of them); None when the content cannot be hashed faithfully."""
    h = hashlib.sha256()
    return h.hexdigest() if _feed(h, value) else None


def _feed_file(h: Any, path: str) -> None:
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(FILE_BLOCK_BYTES), b""):
            h.update(block)


def _feed_bytes(h: Any, value: bytes | bytearray | memoryview) -> bool:
    h.update(b"b" + struct.pack("<Q", len(value)))
    h.update(value)
    return True


def _feed_text(h: Any, value: str | os.PathLike) -> bool:
    text = os.fspath(value)
    h.update(b"s" + text.encode("utf-8", "surrogatepass") + b"\0")
    if isinstance(value, os.PathLike) or (len(text) < MAX_PATH_CHARS and os.path.isfile(text)):
        # A sample that names a file is that file's content: an edited image must miss.
        try:
            _feed_file(h, text)
        except OSError:
            return not isinstance(value, os.PathLike)
    return True


def _feed_number(h: Any, value: bool | int | float | complex | None) -> bool:
    h.update(b"n" + repr((type(value).__name__, value)).encode())
    return True


def _feed_tensor(h: Any, value: torch.Tensor) -> bool:
    value = value.detach().cpu().contiguous()
    h.update(b"t" + repr((str(value.dtype), tuple(value.shape))).encode())
    h.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return True


def _feed_array(h: Any, value: np.ndarray) -> bool:
    if value.dtype == object:
        return False
    h.update(b"a" + repr((value.dtype.str, value.shape)).encode())
    h.update(np.ascontiguousarray(value).tobytes())
    return True


def _feed_sequence(h: Any, value: tuple | list) -> bool:
    h.update(b"l" if isinstance(value, list) else b"u")
    h.update(struct.pack("<Q", len(value)))
    return all(_feed(h, v) for v in value)


def _feed_mapping(h: Any, value: Mapping) -> bool:
    h.update(b"d" + struct.pack("<Q", len(value)))
    for key in sorted(value, key=repr):
        if not (_feed(h, key) and _feed(h, value[key])):
            return False
    return True


# How each kind of value is fed to the hasher; the first kind that matches wins.
_FEEDERS: tuple[tuple[Any, Callable[[Any, Any], bool]], ...] = (
    ((bytes, bytearray, memoryview), _feed_bytes),
    ((str, os.PathLike), _feed_text),
    ((bool, int, float, complex, type(None)), _feed_number),
    (torch.Tensor, _feed_tensor),
    (np.ndarray, _feed_array),
    ((tuple, list), _feed_sequence),
    (Mapping, _feed_mapping),
)


def _feed(h: Any, value: Any) -> bool:
    """Feed `value`'s content to `h`; False when it cannot be hashed faithfully."""
    for kinds, feeder in _FEEDERS:
        if isinstance(value, kinds):
            return feeder(h, value)
    return False
