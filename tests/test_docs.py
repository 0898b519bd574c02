"""The docs name only what exists: every accel function, class or module a doc names in backticks
(`accel.core.measure.now`, or without the root, `profiling.run.profile`), and every repository file
it names (`accel/cli/gate.py`), is found."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
LAYERS = ("core", "profiling", "optimizing", "gating", "cli")
DOTTED = re.compile(r"`((?:accel\.)?(?:" + "|".join(LAYERS) + r")\.[A-Za-z_][\w.]*)`")
FILE = re.compile(r"`((?:accel|tests|benchmarks|examples|docs)/[\w/.-]+\.(?:py|md|yaml))`")


def _resolves(name: str) -> bool:
    """A module, or an attribute (a function, a class, a class's method) of one."""
    parts = (name if name.startswith("accel.") else f"accel.{name}").split(".")
    for split in range(len(parts), 1, -1):
        try:
            found = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False


def _named(pattern: re.Pattern[str]) -> list[tuple[str, str]]:
    return [(doc.name, m.group(1)) for doc in DOCS for m in pattern.finditer(doc.read_text(encoding="utf-8"))]


@pytest.mark.parametrize(("doc", "name"), sorted(set(_named(DOTTED))))
def test_every_dotted_name_a_doc_gives_exists(doc: str, name: str) -> None:
    assert _resolves(name), f"{doc} names {name}, which does not exist"


@pytest.mark.parametrize(("doc", "path"), sorted(set(_named(FILE))))
def test_every_file_a_doc_names_exists(doc: str, path: str) -> None:
    assert (ROOT / path).exists(), f"{doc} names {path}, which does not exist"


def test_the_gate_json_help_names_the_schema_written() -> None:
    from accel.gating.run import GATE_SCHEMA

    assert f"({GATE_SCHEMA})" in (ROOT / "accel" / "cli" / "gate.py").read_text(encoding="utf-8")
