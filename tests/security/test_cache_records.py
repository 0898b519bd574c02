"""A decoded-sample record is data: a crafted or damaged one (an object dtype in its header, a
flipped byte, a truncated file, a garbled header) is a miss and is removed, never a crash.

Each case runs in a fresh process: an object dtype read back as pointers can crash the process,
which must fail the test rather than kill pytest."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

READER = textwrap.dedent("""
    import json, sys, torch
    from accel.optimizing.optimizers._store import DecodedStore
    store = DecodedStore(sys.argv[1], "0123456789abcdef-01234567", max_bytes=1 << 20)
    found = store.get("ab" * 32)
    if found is not None:
        float(found["image"].sum()), float(found["image"][0, 0])  # touch every element
        print(json.dumps({"hit": found["image"].tolist()}))
    else:
        print(json.dumps({"hit": None}))
""")
NS = "0123456789abcdef-01234567"
KEY = "ab" * 32
IMAGE = [[float(i + 4 * j) for i in range(4)] for j in range(3)]


def _record(root: Path) -> Path:
    import torch

    from accel.optimizing.optimizers._store import DecodedStore

    store = DecodedStore(root, NS, max_bytes=1 << 20)
    store.put(KEY, {"image": torch.tensor(IMAGE, dtype=torch.float32)})
    return store.path_of(KEY)


def _header_span(data: bytes) -> tuple[int, int]:
    """Where the JSON header lies in a record (found by its text, whatever the prefix holds)."""
    start = data.index(b'{"arrays"')
    return start, start + json.JSONDecoder().raw_decode(data[start:].decode("latin-1"))[1]


def _reseal(data: bytearray) -> bytearray:
    """A crafted record made as an attacker who knows the format would: a record with a checksum
    gets one that matches what was written (so the dtype check, not the checksum, must refuse it)."""
    if data.startswith(b"ACCLREC2"):
        from accel.core.hashing import digest
        from accel.optimizing.optimizers._store import ALIGN_BYTES, PREFIX_BYTES

        (length,) = struct.unpack("<Q", data[8:16])
        header = bytes(data[PREFIX_BYTES : PREFIX_BYTES + length])
        data_start = -(-(PREFIX_BYTES + length) // ALIGN_BYTES) * ALIGN_BYTES
        data[16:PREFIX_BYTES] = bytes.fromhex(digest(header, bytes(data[data_start:])))
    return data


def _object_dtype(data: bytearray) -> bytearray:
    assert b'"<f4"' in data
    return _reseal(bytearray(data.replace(b'"<f4"', b'"|O" ')))  # same length: offsets hold


def _flipped_byte(data: bytearray) -> bytearray:
    data[-64] ^= 0x40  # inside the array bytes (the last 64 are its tail and padding)
    return data


def _truncated(data: bytearray) -> bytearray:
    return data[: len(data) - 40]


def _garbled_header(data: bytearray) -> bytearray:
    start, end = _header_span(bytes(data))
    data[start:end] = b"\xff" * (end - start)
    return data


CASES = {
    "object_dtype": _object_dtype,
    "flipped_byte": _flipped_byte,
    "truncated": _truncated,
    "garbled_header": _garbled_header,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_crafted_or_damaged_record_is_a_miss_and_is_removed(tmp_path, case):
    path = _record(tmp_path)
    path.write_bytes(bytes(CASES[case](bytearray(path.read_bytes()))))
    done = subprocess.run([sys.executable, "-c", READER, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"hit": None}
    assert not path.exists()


def test_a_whole_record_is_still_a_hit(tmp_path):
    _record(tmp_path)
    done = subprocess.run([sys.executable, "-c", READER, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"hit": IMAGE}
