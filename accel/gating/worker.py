"""`python -m accel.gating.worker`: measure one replicate in this fresh process.

Reads one JSON request on stdin (see accel.gating.bench.run_replicate) and prints one JSON line with the
measurements, or with the error that stopped them. The parent never imports the pipeline itself.
"""

from __future__ import annotations

import json
import sys

from accel.gating.bench import answer, request_from_dict


def main() -> int:
    side, config, timing, counts = request_from_dict(json.loads(sys.stdin.read()))
    print(json.dumps(answer(side, config, timing, counts)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
