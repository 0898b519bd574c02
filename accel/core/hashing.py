"""The one content hasher: what the repeat analyzer counts and what the caches key on.

`content_digest` hashes a value's content (bytes, text, numbers, arrays, tensors, files named by
path, and tuples, lists and dicts of them); the repeated-inputs analyzer and `cache.results` use
the same function, so the repeat rate accel predicts is the hit rate the cache gets.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch


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


def _feed(h: Any, value: Any) -> bool:
    if isinstance(value, (bytes, bytearray, memoryview)):
        h.update(b"b" + struct.pack("<Q", len(value)))
        h.update(value)
        return True
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        h.update(b"s" + text.encode("utf-8", "surrogatepass") + b"\0")
        if isinstance(value, os.PathLike) or (len(text) < 4096 and os.path.isfile(text)):
            # A sample that names a file is that file's content: an edited image must miss.
            try:
                with open(text, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        h.update(block)
            except OSError:
                return not isinstance(value, os.PathLike)
        return True
    if isinstance(value, (bool, int, float, complex)) or value is None:
        h.update(b"n" + repr((type(value).__name__, value)).encode())
        return True
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().contiguous()
        h.update(b"t" + repr((str(value.dtype), tuple(value.shape))).encode())
        h.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
        return True
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return False
        h.update(b"a" + repr((value.dtype.str, value.shape)).encode())
        h.update(np.ascontiguousarray(value).tobytes())
        return True
    if isinstance(value, (tuple, list)):
        h.update(b"l" if isinstance(value, list) else b"u")
        h.update(struct.pack("<Q", len(value)))
        return all(_feed(h, v) for v in value)
    if isinstance(value, Mapping):
        h.update(b"d" + struct.pack("<Q", len(value)))
        for key in sorted(value, key=repr):
            if not (_feed(h, key) and _feed(h, value[key])):
                return False
        return True
    return False
