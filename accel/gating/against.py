"""`accel gate --against REF`: the same pipeline file at a git ref, in a temporary worktree, gated
against the current checkout in lockstep process pairs (accel.gating.run.gate_sides).

Both sides must run their own checkout's code, not only the pipeline file: a package the pipeline
imports from a src/ layout, PYTHONPATH or an editable install would otherwise resolve to the
current checkout on both sides, and a regression in the user's own library would be measured
A/A. So each import root inside the checkout (src/, PYTHONPATH and sys.path entries, editable
installs' package folders) is mapped into the worktree and put first on the baseline side's
sys.path (the current one first on the candidate's), every replicate records the file of each
user module it imported, and the gate refuses to measure when a baseline-side module resolves
into the current checkout (or a candidate-side one into the worktree).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from accel.core.errors import GateError
from accel.core.loading import check_file
from accel.core.progress import Progress
from accel.gating.bench import Side
from accel.gating.run import GateConfig, GateResult, gate_sides


def _git(args: list[str], cwd: Path) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError as exc:
        raise GateError(
            "git is not installed", "install git, or gate against a stored baseline with --baseline"
        ) from exc
    if done.returncode != 0:
        raise GateError(
            f"git {' '.join(args)} failed: {done.stderr.strip().splitlines()[-1:] or ['no output']}",
            "check the ref (e.g. git merge-base origin/main HEAD) and that the file is in a git repository",
        )
    return done.stdout.strip()


@dataclasses.dataclass(frozen=True)
class Checkout:
    """The current checkout's root, the temporary worktree at the ref, and the file in each."""

    root: Path
    tree: Path
    file: Path
    old_file: Path


@contextlib.contextmanager
def worktree_at(file: Path, ref: str) -> Iterator[Checkout]:
    """The same file as it is at `ref`, in a temporary worktree removed afterwards."""
    root = Path(_git(["rev-parse", "--show-toplevel"], file.parent)).resolve()
    relative = file.resolve().relative_to(root)
    holder = Path(tempfile.mkdtemp(prefix="accel-gate-"))
    tree = holder / "tree"
    try:
        # Inside the try: a signal while git adds the worktree still removes what it registered.
        _git(["worktree", "add", "--detach", "--quiet", str(tree), ref], root)
        old = tree / relative
        if not old.is_file():
            raise GateError(
                f"{relative} does not exist at {ref}",
                "gate a file that exists on both sides, or save a baseline with accel bench --save-baseline",
            )
        yield Checkout(root=root, tree=tree.resolve(), file=file.resolve(), old_file=old.resolve())
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=root, capture_output=True, timeout=120)
        shutil.rmtree(holder, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=root, capture_output=True, timeout=120)


def _editable_roots() -> list[str]:
    """Folders that editable installs (setuptools' __editable__ finders) import packages from."""
    roots = []
    for finder in sys.meta_path:
        mapping = getattr(sys.modules.get(getattr(finder, "__module__", "")), "MAPPING", None)
        if isinstance(mapping, dict):
            roots += [str(Path(path).parent) for path in mapping.values()]
    return roots


def import_roots(root: Path) -> list[Path]:
    """Folders inside the checkout that Python imports the user's code from, in path order."""
    installed = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix)}
    candidates = [
        str(root / "src"),
        *os.environ.get("PYTHONPATH", "").split(os.pathsep),
        *sys.path,
        *_editable_roots(),
    ]
    found: list[Path] = []
    for entry in candidates:
        if not entry:
            continue
        folder = Path(entry).resolve()
        if (
            folder.is_dir()
            and folder.is_relative_to(root)
            and not any(folder.is_relative_to(p) for p in installed)
            and not any(part in ("site-packages", "dist-packages") for part in folder.parts)
            and folder not in found
        ):
            found.append(folder)
    return found


def sides_for(checkout: Checkout, baseline_env=(), candidate_env=()) -> tuple[Side, Side]:
    """The two sides, each with its own checkout's import roots first on sys.path."""
    roots = import_roots(checkout.root)
    mapped = [checkout.tree / r.relative_to(checkout.root) for r in roots]
    base = Side(
        file=checkout.old_file,
        cwd=checkout.old_file.parent,
        env=tuple(baseline_env),
        paths=tuple(str(p) for p in mapped if p.is_dir()),
    )
    cand = Side(file=checkout.file, cwd=checkout.file.parent, env=tuple(candidate_env), paths=tuple(map(str, roots)))
    return base, cand


def refuse_crossed_modules(checkout: Checkout, ref: str, base: dict[str, str], cand: dict[str, str]) -> None:
    """A module of one side that resolved into the other side's checkout makes the gate meaningless."""
    for side, modules, foreign, own in (
        ("baseline", base, checkout.root, checkout.tree),
        ("candidate", cand, checkout.tree, checkout.root),
    ):
        for name, file in sorted(modules.items()):
            path = Path(file)
            if path.is_relative_to(foreign) and not path.is_relative_to(own):
                where = "the current checkout" if side == "baseline" else f"the worktree of {ref}"
                raise GateError(
                    f"the {side} side imported {name} from {file}, in {where}: it would measure the other side's code",
                    "import your package from the pipeline's folder, a src/ layout, PYTHONPATH or an editable "
                    "install (accel maps those into each checkout), not from an absolute path",
                )


def gate_against(
    file: str | os.PathLike,
    ref: str,
    config: GateConfig = GateConfig(),
    *,
    progress: Progress | None = None,
    baseline_env: tuple[tuple[str, str], ...] = (),
    candidate_env: tuple[tuple[str, str], ...] = (),
) -> GateResult:
    """Compare a pipeline file (and the user code it imports) with itself at a git ref."""
    path = check_file(file).resolve()
    with worktree_at(path, ref) as checkout:
        base, cand = sides_for(checkout, baseline_env, candidate_env)
        result = gate_sides(
            base,
            cand,
            config,
            progress=progress,
            check_modules=lambda b, c: refuse_crossed_modules(checkout, ref, b, c),
        )
    return dataclasses.replace(result, target=path.name, reference=ref)
