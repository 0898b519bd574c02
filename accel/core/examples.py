"""The example pipelines shipped with accel, so that an installed wheel has a first file to run.

A wheel holds them as package data in `accel/examples/` (setup.py copies the repository's
`examples/` there at build time: one copy in the source, none to drift); a source checkout or an
editable install reads the repository's `examples/` itself. Nothing here imports an example: its
description is read from its module docstring.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

from accel.core.errors import AccelError
from accel.core.io import copy_file_atomic

# The example `accel demo` profiles: JPEG decoding dominates it, so the report has a clear finding.
DEMO_EXAMPLE = "image_pipeline.py"
PACKAGED = Path(__file__).resolve().parents[1] / "examples"
SOURCE = Path(__file__).resolve().parents[2] / "examples"


@dataclasses.dataclass(frozen=True)
class Example:
    name: str  # the file name, e.g. image_pipeline.py
    path: Path
    summary: str  # the first line of its docstring


def examples_folder() -> Path:
    """The folder holding the examples: the wheel's package data, else the source checkout's."""
    for folder in (PACKAGED, SOURCE):
        if (folder / DEMO_EXAMPLE).is_file():
            return folder
    raise AccelError(
        f"accel's examples are not installed (looked in {PACKAGED} and {SOURCE})",
        "reinstall accel from its wheel (pip install --force-reinstall accel)",
    )


def list_examples() -> list[Example]:
    """Every example, by file name."""
    found = []
    for path in sorted(examples_folder().glob("*.py")):
        if path.name.startswith("_"):
            continue
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        found.append(Example(path.name, path, docstring.strip().splitlines()[0] if docstring.strip() else ""))
    return found


def demo_example() -> Path:
    return examples_folder() / DEMO_EXAMPLE


def copy_examples(destination: str | Path) -> list[Path]:
    """Copy every example into `destination` (created if missing). A file already there is never
    overwritten: the copy is refused before anything is written, naming the first one."""
    folder = Path(destination)
    if folder.exists() and not folder.is_dir():
        raise AccelError(f"{folder} is a file, not a folder", "give a folder to copy the examples into")
    examples = list_examples()
    for example in examples:
        if (folder / example.name).exists() or (folder / example.name).is_symlink():
            raise AccelError(
                f"{folder / example.name} exists: accel never overwrites your files",
                "choose another folder (accel examples DEST), or move it away",
            )
    folder.mkdir(parents=True, exist_ok=True)
    copied = []
    for example in examples:
        copy_file_atomic(example.path, folder / example.name)
        copied.append(folder / example.name)
    return copied
