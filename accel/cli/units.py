"""Units for display, chosen here and nowhere else: seconds and bytes as the unit that reads best,
shares as percentages."""

from __future__ import annotations


def format_seconds(seconds: float) -> str:
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def format_bytes(count: float) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(count) >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count:.0f} B"


def format_share(share: float) -> str:
    return f"{share * 100:.1f}%"
