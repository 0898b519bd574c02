"""The lock file's fields, checked as untrusted data before anything reads them.

A lock travels (committed, downloaded from CI), so its YAML is input: read_lock refuses a file too
big to be one, YAML too deep to parse, and Lock.from_dict then refuses a key it does not know (a
typo, or a field a newer accel writes that this one would silently ignore) and a field of the
wrong type (a number where a digest belongs, a string where a speedup does), each with a
LockError naming the field, instead of a crash in whatever uses the field later.
"""

from __future__ import annotations

import math
from typing import Any

from accel.core.errors import LockError
from accel.optimizing.lock_files import REWRITE_HINT

# The lock's keys, its pipeline's and an optimization's (Lock.to_dict writes exactly these).
TOP_KEYS = frozenset(
    {
        "schema",
        "kind",
        "pipeline",
        "recipe",
        "target",
        "speedup",
        "min_speedup",
        "min_memory_saving",
        "max_slowdown",
        "versions",
        "artifacts",
        "optimizations",
    }
)
PIPELINE_KEYS = frozenset({"file", "sha256", "path", "weights_sha256"})
ENTRY_KEYS = frozenset({"optimizer", "params", "state"})
# What a lock's target may be ("": a lock written before targets were recorded).
LOCK_TARGETS = ("", "latency", "throughput", "memory")
# The numbers a lock records (a speedup, the keep thresholds): finite, or absent.
NUMBER_FIELDS = ("speedup", "min_speedup", "min_memory_saving", "max_slowdown")
# The text fields (absent reads as "").
TEXT_FIELDS = ("recipe", "target")


def corrupt(where: str, what: str) -> LockError:
    return LockError(f"{where} is corrupt: {what}", REWRITE_HINT)


def check_keys(data: dict[str, Any], known: frozenset[str], where: str, part: str) -> None:
    unknown = sorted(str(key) for key in data if key not in known)
    if unknown:
        raise corrupt(where, f"{part} has unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")


def check_lock_fields(data: dict[str, Any], where: str) -> None:
    """Refuse unknown keys and fields of the wrong type in a lock's top level and its pipeline
    (optimizations are checked one by one as Lock.from_dict parses them)."""
    check_keys(data, TOP_KEYS, where, "the lock")
    pipeline = data.get("pipeline")
    if isinstance(pipeline, dict):
        check_keys(pipeline, PIPELINE_KEYS, where, "pipeline")
        for key in ("file", "path", "weights_sha256"):
            if pipeline.get(key) is not None and not isinstance(pipeline[key], str):
                raise corrupt(where, f"pipeline.{key} is {_shown(pipeline[key])}, not text")
    for key in TEXT_FIELDS:
        if data.get(key) is not None and not isinstance(data[key], str):
            raise corrupt(where, f"{key} is {_shown(data[key])}, not text")
    if data.get("target") not in (None, *LOCK_TARGETS):
        raise corrupt(where, f"target {data['target']!r} is not one of {', '.join(t for t in LOCK_TARGETS if t)}")
    _check_numbers(data, where)
    _check_name_mappings(data, where)


def _check_numbers(data: dict[str, Any], where: str) -> None:
    for key in NUMBER_FIELDS:
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise corrupt(where, f"{key} is {_shown(value)}, not a number of 0 or more")


def _check_name_mappings(data: dict[str, Any], where: str) -> None:
    for key in ("versions", "artifacts"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise corrupt(where, f"{key} is {_shown(value)}, not a mapping of names to text")


def check_entry(entry: Any, number: int, where: str) -> None:
    """One optimization: a mapping of optimizer (text), params and state (mappings), nothing else."""
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("optimizer"), str)
        or not isinstance(entry.get("params", {}), dict)
        or not isinstance(entry.get("state", {}), dict)
    ):
        raise corrupt(where, f"optimization {number} needs optimizer (a name), params and state (mappings)")
    check_keys(entry, ENTRY_KEYS, where, f"optimization {number}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
