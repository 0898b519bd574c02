"""glibc malloc's two thresholds, and the page faults a pipeline pays when they move.

glibc hands freed memory at the top of its heap back to the kernel once it exceeds the trim
threshold (128 KiB at start), and serves blocks above the mmap threshold with mmap, unmapped again
on free; both thresholds move on their own as the process frees large blocks (mallopt(3)). A CPU
pipeline that frees its activations after every call and asks for them again on the next one can
then take a fresh page fault, the kernel zeroing a 4 KiB page, for every page of every activation,
every call, or not, depending on what the process allocated before. Pinned (freed memory kept up to
1 GiB, blocks under 32 MiB from the heap), the memory is reused and the faults go.

The setting is process-wide and cannot be undone once a process has run with it, so it is never
timed in this process: see accel.optimizing.fresh.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import resource
import time

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt(3) parameters (malloc.h)
TRIM_THRESHOLD_BYTES = 1 << 30
MMAP_THRESHOLD_BYTES = 32 << 20
# The same setting by environment, read by glibc when a process starts.
ENVIRONMENT = {
    "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD_BYTES),
    "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD_BYTES),
}
PAGE_BYTES = mmap.PAGESIZE


def glibc_version() -> str | None:
    """The C library's version when it is glibc (mallopt's parameters are glibc's), else None."""
    try:
        libc = ctypes.CDLL(None)
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    return version().decode()


def pin() -> bool:
    """Pin both thresholds in this process from now on; True when glibc took both."""
    if glibc_version() is None:
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)) and bool(
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    )


def pinned_by_environment(environ: dict[str, str] | None = None) -> bool:
    """True when the process's environment already sets both thresholds."""
    env = os.environ if environ is None else environ
    return all(name in env for name in ENVIRONMENT)


def minor_faults() -> int:
    """Minor page faults this process has taken so far, over all its threads."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def seconds_per_fault(pages: int = 2048, tries: int = 3) -> float:
    """What one minor page fault costs here: fresh anonymous pages touched one by one (the
    kernel zeroes each on its first touch), the fastest of a few tries, per page."""
    best = float("inf")
    for _ in range(tries):
        region = mmap.mmap(-1, pages * PAGE_BYTES)
        try:
            start = time.perf_counter()
            for offset in range(0, pages * PAGE_BYTES, PAGE_BYTES):
                region[offset] = 1
            best = min(best, (time.perf_counter() - start) / pages)
        finally:
            region.close()
    return best
