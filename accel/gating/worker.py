"""`python -m accel.gating.worker RESULT_FD REPORT_FD`: measure one replicate in this fresh process.

Reads one JSON request on stdin (see accel.gating.bench.run_replicate) and writes one JSON line with
the measurements, or with the error that stopped them, to the pipe RESULT_FD: not to stdout, which
the pipeline's code (and any child it starts) may print to or hold open. REPORT_FD is the user's
stderr, for the stack of a stage that hung. The parent never imports the pipeline itself.
`--live CMD_FD RESULT_FD REPORT_FD` instead serves timed calls one at a time (accel.gating.live).
"""

from __future__ import annotations

import json
import os
import sys

from accel.gating.bench import answer, request_from_dict
from accel.gating.process import watch_replicate


def _private(*fds: int) -> None:
    """The protocol's descriptors are not handed on to processes the pipeline's code starts."""
    for fd in fds:
        os.set_inheritable(fd, False)


def main() -> int:
    if sys.argv[1:2] == ["--live"]:  # one side of a lockstep pair: accel.gating.live
        from accel.gating.live import serve

        command_fd, result_fd, report_fd = (int(a) for a in sys.argv[2:5])
        _private(command_fd, result_fd, report_fd)
        request = json.loads(sys.stdin.readline())
        side, config, _, _ = request_from_dict(request)
        serve(side, config, command_fd, result_fd, apply_env=False, report_fd=report_fd)
        return 0
    result_fd, report_fd = int(sys.argv[1]), int(sys.argv[2])
    _private(result_fd, report_fd)
    side, config, timing, counts = request_from_dict(json.loads(sys.stdin.read()))
    with os.fdopen(result_fd, "w", buffering=1) as results:
        watch_replicate(config, results, report_fd)
        # The side's environment was set when this process started (before torch was imported).
        results.write(json.dumps(answer(side, config, timing, counts, apply_env=False)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
