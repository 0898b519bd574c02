"""`python -m accel.gating.worker`: measure one replicate in this fresh process.

Reads one JSON request on stdin (see accel.gating.bench.run_replicate) and prints one JSON line with the
measurements, or with the error that stopped them. The parent never imports the pipeline itself.
`--live CMD_FD RESULT_FD` instead serves timed calls one at a time (accel.gating.live).
"""

from __future__ import annotations

import json
import sys

from accel.gating.bench import answer, request_from_dict


def main() -> int:
    if sys.argv[1:2] == ["--live"]:  # one side of a lockstep pair: accel.gating.live
        from accel.gating.live import serve

        request = json.loads(sys.stdin.readline())
        side, config, _, _ = request_from_dict(request)
        serve(side, config, int(sys.argv[2]), int(sys.argv[3]), apply_env=False)
        return 0
    side, config, timing, counts = request_from_dict(json.loads(sys.stdin.read()))
    # The side's environment was set when this process started (before torch was imported).
    print(json.dumps(answer(side, config, timing, counts, apply_env=False)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
