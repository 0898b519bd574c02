"""`python -m benchmarks [NAME ...]`: run the named benchmarks (all when none is named)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    names = [a for a in argv if not a.startswith("-")] or available()  # options are the benchmark's (sys.argv)
    unknown = [n for n in names if n not in available()]
    if unknown:
        print(f"error: unknown benchmark {', '.join(unknown)} (available: {', '.join(available())})", file=sys.stderr)
        return 2
    for name in names:
        print(f"== benchmarks.{name}")
        importlib.import_module(f"benchmarks.{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
