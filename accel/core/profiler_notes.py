"""torch.profiler's own notes kept out of the user's terminal.

Each start and stop of torch.profiler prints a line from C++ straight to the process's stderr
(`USDT:<time> <pid>:<tid> SyncActivityProfilerHandler.cpp:52] profiler_start`), one pair per
profiler pass, on every `accel profile`. `quiet_profiler(prof)` starts and stops a profiler with
file descriptor 2 pointed at a temporary file, then writes back every other line it caught (a
warning the user should see still reaches the terminal).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Any, Iterator

# The lines torch.profiler prints at start and stop (kineto's USDT probes' log lines).
PROFILER_NOTE = re.compile(rb"^USDT:.*\bprofiler_(start|stop)\s*$")


@contextlib.contextmanager
def quiet_profiler(prof: Any) -> Iterator[Any]:
    """Enter and leave the torch.profiler `prof` with its start and stop notes dropped."""
    with notes_dropped():
        entered = prof.__enter__()
    try:
        yield entered
    finally:
        with notes_dropped():
            prof.__exit__(*sys.exc_info())


@contextlib.contextmanager
def notes_dropped(fd: int = 2) -> Iterator[None]:
    """Capture what is written to `fd` during the block; write back all but torch.profiler's notes."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), fd)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().splitlines(keepends=True) if not PROFILER_NOTE.match(line)]
            if kept:
                os.write(fd, b"".join(kept))
