"""The package's layering, checked by walking every import (lazy ones included) in the AST.

The rules are the ones docs/architecture.md states; a break names the file and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "accel"


def _module_name(path: Path, root: Path = PACKAGE.parent) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path = PACKAGE.parent) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file; `from a import b` counts a.b too."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return found


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _accel_imports(name: str) -> list[tuple[int, str]]:
    """Imports of accel modules (resolved to a module that exists) made by module `name`."""
    result = []
    for line, imported in _imports(MODULES[name]):
        if imported == "accel" or imported.startswith("accel."):
            target = imported
            while target not in MODULES and "." in target:
                target = target.rpartition(".")[0]
            if target in MODULES:
                result.append((line, target))
    return result


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _breaks(rule) -> list[str]:
    return [
        f"{MODULES[name].relative_to(PACKAGE.parent)}:{line} imports {target}"
        for name in MODULES
        for line, target in _accel_imports(name)
        if rule(name, target)
    ]


RULES = {
    "nothing imports the package root": lambda src, dst: dst == "accel" and src not in ("accel.__main__",),
    "core imports only core": lambda src, dst: _in(src, "accel.core") and not _in(dst, "accel.core", "accel._version"),
    "profiling never imports optimizing or gating": lambda src, dst: (
        _in(src, "accel.profiling") and _in(dst, "accel.optimizing", "accel.gating")
    ),
    "analyzers import only data modules and core": lambda src, dst: (
        _in(src, "accel.profiling.analyzers")
        and not _in(
            dst,
            "accel.core",
            "accel.profiling.data",
            "accel.profiling.report",
            "accel.profiling.costmodel",
            "accel.profiling.cure_units",
            "accel.profiling.rates",
            "accel.profiling.ranks",
        )
        and dst != "accel.profiling.analyzers"
    ),
    "optimizers read the machine from their context, not from calibration": lambda src, dst: (
        _in(src, "accel.optimizing.optimizers") and _in(dst, "accel.core.calibration")
    ),
    "optimizers never import the engine, other optimizers' modules aside from shared helpers": lambda src, dst: (
        _in(src, "accel.optimizing.optimizers")
        and _in(dst, "accel.optimizing.recipes", "accel.optimizing.search", "accel.optimizing.run")
    ),
    "gating imports only core, the lock, and gating": lambda src, dst: (
        _in(src, "accel.gating")
        and not _in(dst, "accel.core", "accel.gating", "accel.optimizing.lock", "accel._version")
    ),
    "nothing but the CLI imports gating": lambda src, dst: (
        _in(dst, "accel.gating") and not _in(src, "accel.gating", "accel.cli")
    ),
    "nothing but the CLI imports the CLI": lambda src, dst: (
        _in(dst, "accel.cli") and not _in(src, "accel.cli", "accel.__main__")
    ),
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_layer_rule(rule: str) -> None:
    assert _breaks(RULES[rule]) == [], rule


def _third_party(name: str) -> set[str]:
    return {imported.split(".")[0] for _, imported in _imports(MODULES[name])}


def test_only_the_cli_imports_typer_or_rich() -> None:
    offenders = [name for name in MODULES if not _in(name, "accel.cli") and _third_party(name) & {"typer", "rich"}]
    assert offenders == []


def test_analyzers_never_touch_torch_profiler() -> None:
    offenders = [
        name
        for name in MODULES
        if _in(name, "accel.profiling.analyzers")
        and any(
            imported.startswith("torch.profiler") or imported.startswith("torch.autograd.profiler")
            for _, imported in _imports(MODULES[name])
        )
    ]
    assert offenders == []


def test_only_the_cli_prints() -> None:
    """print() is the CLI's; the child programs' protocol lines on stdout (the bench worker's, the
    fresh-process side's) are the exception."""
    offenders = []
    for name, path in MODULES.items():
        if _in(name, "accel.cli") or name in ("accel.gating.worker", "accel.optimizing.fresh_child"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{name}:{node.lineno}")
    assert offenders == []


def test_no_import_cycles() -> None:
    """Lazy imports count: a cycle through a function-level import is still a cycle of the design.

    A package's __init__ importing its own children (registries filling themselves) is not an edge
    back up: children depend on the package's registry, the package only loads them.
    """
    graph = {
        name: {
            dst
            for _, dst in _accel_imports(name)
            if dst != name and not (MODULES[name].name == "__init__.py" and _in(dst, name))
        }
        for name in MODULES
    }
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert cycles == []


def test_the_walker_sees_a_break(tmp_path: Path) -> None:
    """The walker itself: a lazy import inside a function is found."""
    sample = tmp_path / "accel" / "core" / "x.py"
    sample.parent.mkdir(parents=True)
    sample.write_text("def f():\n    from accel.optimizing.lock import load\n    from . import io\n    return load\n")
    found = _imports(sample, tmp_path)
    assert (2, "accel.optimizing.lock") in found
    assert (3, "accel.core.io") in found
