"""The gate's thresholds: from flags, from [tool.accel.gate] in the nearest pyproject.toml, else the defaults."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from accel.core.errors import AccelError
from accel.gating.verdicts import Thresholds

PYPROJECT_KEYS = {f.name.replace("_", "-"): f.name for f in dataclasses.fields(Thresholds)}


def parse_percent(text: str | float, what: str) -> float:
    """'10%' or '10' -> 0.10; a number from TOML is read as percent too."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1] if raw.endswith("%") else raw) / 100.0
    except ValueError:
        value = math.nan
    if math.isnan(value) or value < 0:
        raise AccelError(f"{what} must be a percentage >= 0 like 10%, got {text!r}", f"e.g. {what} 10%")
    return value


def find_pyproject(start: Path) -> Path | None:
    for folder in (start.resolve(), *start.resolve().parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def pyproject_thresholds(start: Path) -> dict[str, float]:
    """[tool.accel.gate] of the nearest pyproject.toml above `start`, as Thresholds fields."""
    import tomllib

    file = find_pyproject(start)
    if file is None:
        return {}
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AccelError(f"{file} is not valid TOML: {exc}", "fix the file or remove [tool.accel.gate]") from exc
    section = data.get("tool", {}).get("accel", {}).get("gate", {})
    if not isinstance(section, dict):
        raise AccelError(f"{file}: [tool.accel.gate] must be a table", 'e.g. max-slowdown = "10%"')
    unknown = sorted(set(section) - set(PYPROJECT_KEYS))
    if unknown:
        raise AccelError(
            f"{file}: unknown key(s) {', '.join(unknown)} in [tool.accel.gate]",
            f"valid: {', '.join(PYPROJECT_KEYS)}",
        )
    return {PYPROJECT_KEYS[k]: parse_percent(v, k) for k, v in section.items()}


def resolve_thresholds(flags: dict[str, str | None], start: Path) -> Thresholds:
    """Flags win over pyproject.toml, which wins over the defaults."""
    values = pyproject_thresholds(start)
    for field, text in flags.items():
        if text is not None:
            values[field] = parse_percent(text, "--" + field.replace("_", "-"))
    return Thresholds(**values)
