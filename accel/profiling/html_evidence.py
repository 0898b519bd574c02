"""A finding's evidence as readable HTML: each number in the unit its key names, at sensible precision.

A key naming a share, fraction or saving reads as a percentage; seconds in s, ms or us; bytes in
KB..GB; GB/s and GFLOP/s with three significant figures; anything else with three significant
figures. Nested values inherit the unit of their parent's key ("predicted_saving": {cure: share}).
A list of records becomes a small table. Strings are escaped; nothing is raw JSON.
"""

from __future__ import annotations

import html
from typing import Any

PERCENT_WORDS = ("share", "fraction", "saving")
BYTE_WORDS = ("bytes",)
SECONDS_WORDS = ("seconds",)


def format_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def format_bytes(count: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(count) >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count:.0f} B"


def _unit(key: str) -> str | None:
    words = key.lower()
    if any(word in words for word in PERCENT_WORDS):
        return "percent"
    if any(word in words for word in SECONDS_WORDS):
        return "seconds"
    if any(word in words for word in BYTE_WORDS):
        return "bytes"
    return None


def format_number(value: float, unit: str | None) -> str:
    if unit == "percent":
        return f"{value * 100:.1f}%"
    if unit == "seconds":
        return format_seconds(value)
    if unit == "bytes":
        return format_bytes(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def _value_html(value: Any, unit: str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return format_number(value, unit)
    if isinstance(value, dict):
        return evidence_html(value, unit)
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(item, dict) for item in value):
            return _records_html(list(value))
        return ", ".join(_value_html(item, unit) for item in value) or "-"
    return html.escape(str(value))


def _records_html(records: list[dict[str, Any]]) -> str:
    keys = list(dict.fromkeys(key for record in records for key in record))
    head = "".join(f"<th>{html.escape(key)}</th>" for key in keys)
    rows = "".join(
        "<tr>" + "".join(f"<td>{_value_html(record.get(key), _unit(key))}</td>" for key in keys) + "</tr>"
        for record in records
    )
    return f'<table class="evidence"><tr>{head}</tr>{rows}</table>'


def evidence_html(evidence: dict[str, Any], unit: str | None = None) -> str:
    """The evidence as a two-column table: key, value in its unit."""
    if not evidence:
        return "-"
    rows = "".join(
        f"<tr><td>{html.escape(str(key))}</td><td>{_value_html(value, _unit(str(key)) or unit)}</td></tr>"
        for key, value in evidence.items()
    )
    return f'<table class="evidence">{rows}</table>'
