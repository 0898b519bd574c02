"""Finding the pipeline in a user's file.

The form is decided from the file's syntax tree first, before any of its code runs:
1. it binds `pipeline`: an accel.Pipeline, or a zero-argument callable returning one;
2. it binds `model` and `example_inputs`: the minimal form, which becomes a Pipeline with `inputs`;
3. anything else: script mode, the file is run as `__main__` (see accel.profiling.script).
Only forms 1 and 2 are imported (with the file's folder on sys.path). A training script with a
top-level `model` but no `example_inputs` is therefore run once, as a script, not imported first
(importing would run its loop as a side effect); the Script carries a one-line note saying so.
When the tree cannot tell (a star import, a name bound only at run time) the file is imported;
if it then defines no complete form, it is run again as a script and the note says it ran twice.

Importing a user file never writes to it; bytecode caching is turned off while it loads.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib.util
import os
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import torch

from accel.core.errors import AccelError, PipelineError, PipelineLoadError
from accel.core.pipeline import Pipeline


@dataclasses.dataclass(frozen=True)
class Script:
    """A file with no pipeline in it: accel runs it as `__main__` with these arguments."""

    path: Path
    args: tuple[str, ...] = ()
    # One line for the user on why the file runs as a script (empty when it is a plain script).
    note: str = ""
    # The incomplete minimal form, e.g. "defines model but not example_inputs": a script run that
    # takes no batch from a DataLoader is then refused with this (there is nothing else to profile).
    incomplete_form: str = ""


def check_file(path: str | os.PathLike) -> Path:
    file = Path(path)
    if not file.exists():
        raise PipelineLoadError(f"no such file: {file}", "check the path of the pipeline file")
    if file.is_dir():
        raise PipelineLoadError(f"{file} is a folder, not a pipeline file", "pass a .py file (or a .onnx model)")
    if not file.is_file():  # a FIFO would block the read, /dev/zero would never end it
        raise PipelineLoadError(
            f"{file} is not a regular file (a pipe, a socket or a device)", "pass a .py file saved on disk"
        )
    if file.suffix not in (".py", ".onnx"):
        raise PipelineLoadError(f"{file} is not a Python file", "pass a .py pipeline file (or a .onnx model)")
    return file


@contextlib.contextmanager
def user_code_context(folder: Path) -> Iterator[None]:
    """The user's folder on sys.path and no .pyc written next to their files."""
    _forget_other_user_modules(folder)
    old_path = list(sys.path)
    old_dont_write = sys.dont_write_bytecode
    sys.path.insert(0, str(folder))
    sys.dont_write_bytecode = True
    try:
        yield
    finally:
        sys.path[:] = old_path
        sys.dont_write_bytecode = old_dont_write


# Folders user code was loaded from in this process.
_USER_FOLDERS: set[Path] = set()


def _forget_other_user_modules(folder: Path) -> None:
    """Drop helper modules imported from another user folder: two pipeline files that both do
    `from helper import ...` must each get their own helper, not the one cached by the first load.
    Modules from this folder stay (objects already built may be pickled by module name)."""
    folder = folder.resolve()
    others = _USER_FOLDERS - {folder}
    _USER_FOLDERS.add(folder)
    if not others:
        return
    for name, module in list(sys.modules.items()):
        location = getattr(module, "__file__", None)
        if location and Path(location).resolve().parent in others:
            sys.modules.pop(name, None)


@contextlib.contextmanager
def _argv(argv: list[str]) -> Iterator[None]:
    old = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = old


def import_file(file: Path, args: tuple[str, ...] = ()) -> Any:
    """Import a pipeline file as a fresh module (sys.argv is the file and `args` meanwhile, as when
    it runs as a script); errors in it become PipelineLoadError."""
    name = f"accel_user_{file.stem}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise PipelineLoadError(f"cannot import {file}", "pass a .py file")
    module = importlib.util.module_from_spec(spec)
    with user_code_context(file.resolve().parent), _argv([str(file), *args]):
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except SyntaxError as exc:
            sys.modules.pop(name, None)
            raise PipelineLoadError(
                f"syntax error in {file}, line {exc.lineno}: {exc.msg}", "fix the syntax error and run again"
            ) from exc
        except ImportError as exc:
            sys.modules.pop(name, None)
            raise PipelineLoadError(
                f"{file} failed to import: {exc}", "install the missing module or fix the import"
            ) from exc
        except AccelError:
            sys.modules.pop(name, None)
            raise
        except BaseException as exc:  # noqa: BLE001 - anything the user's module raises while importing
            sys.modules.pop(name, None)
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise PipelineLoadError(
                f"{file} raised {type(exc).__name__} while importing: {exc}",
                "fix the error in the pipeline file (run it with python to see the traceback, or use --debug)",
            ) from exc
    return module


def _resolve(value: Any, what: str, file: Path) -> Any:
    """Take a value or call a zero-argument factory for it."""
    if callable(value) and not isinstance(value, (torch.nn.Module, Pipeline)):
        try:
            return value()
        except AccelError:
            raise
        except Exception as exc:
            raise PipelineLoadError(
                f"{what}() in {file} raised {type(exc).__name__}: {exc}", f"fix {what}() in the pipeline file"
            ) from exc
    return value


def _bound_names(body: list[ast.stmt]) -> set[str]:
    """Names a module binds at top level (inside if/try/with blocks too, not inside functions)."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        for field in ("body", "orelse", "finalbody", "handlers"):
            inner = getattr(node, field, None)
            if isinstance(inner, list) and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.update(
                    _bound_names(
                        [n for n in inner if isinstance(n, ast.stmt)]
                        + [s for h in inner if isinstance(h, ast.ExceptHandler) for s in h.body]
                    )
                )
    return names


def declared_form(file: Path) -> str:
    """The form the file's top-level names declare, read from its syntax tree without running it:
    "pipeline", "minimal", "script", or "unknown" (a star import, or a syntax error that importing
    reports with its line)."""
    try:
        tree = ast.parse(file.read_bytes(), filename=str(file))
    except (SyntaxError, ValueError):
        return "unknown"
    names = _bound_names(tree.body)
    if "pipeline" in names:
        return "pipeline"
    if {"model", "example_inputs"} <= names:
        return "minimal"
    return "unknown" if "*" in names else "script"


def is_plain_script(file: Path) -> bool:
    """True when the file cannot define a pipeline: it is run as a script, never imported first
    (importing a script without a __main__ guard would run it twice). A file that runs nothing at
    all is neither: refused with a PipelineLoadError."""
    form = declared_form(file)
    if form == "script":
        refuse_file_that_runs_nothing(file)
    return form == "script"


def refuse_file_that_runs_nothing(file: Path) -> None:
    """An empty file (or one with only comments or a docstring) has no pipeline and no script to run:
    every command says so, rather than profiling or tuning nothing."""
    if _runs_nothing(file):
        raise PipelineLoadError(
            f"{file} defines no pipeline and runs nothing (it has no statement but comments or a docstring)",
            "define pipeline = accel.Pipeline(...), or model and example_inputs, or give a script that runs",
        )


def _incomplete_form(has_model: bool, has_inputs: bool) -> str:
    if has_model == has_inputs:
        return ""
    return f"defines {'model' if has_model else 'example_inputs'} but not {'example_inputs' if has_model else 'model'}"


def _names_in_tree(file: Path) -> set[str]:
    return _bound_names(ast.parse(file.read_bytes(), filename=str(file)).body)


def _runs_nothing(file: Path) -> bool:
    """True for a file with nothing to run: no statement, or a docstring alone."""
    body = ast.parse(file.read_bytes(), filename=str(file)).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def find_target(path: str | os.PathLike, args: tuple[str, ...] = ()) -> Pipeline | Script:
    """The pipeline a file defines, or a Script when it defines none (see the module docstring)."""
    file = check_file(path)
    if file.suffix == ".onnx":
        raise PipelineLoadError(f"{file} is an ONNX model, not a pipeline file", "use accel profile for ONNX models")
    form = declared_form(file)
    if form == "script":
        refuse_file_that_runs_nothing(file)
        names = _names_in_tree(file)
        incomplete = _incomplete_form("model" in names, "example_inputs" in names)
        note = (
            f"{file.name} {incomplete}: run once as a script (add "
            f"{'example_inputs = (...)' if 'model' in names else 'model = ...'} to profile the model on its own)"
            if incomplete
            else ""
        )
        return Script(path=file, args=tuple(args), note=note, incomplete_form=incomplete)
    module = import_file(file, tuple(args))
    found = _pipeline_in(module, file)
    if found is not None:
        return found
    incomplete = _incomplete_form(hasattr(module, "model"), hasattr(module, "example_inputs"))
    note = (
        f"{file.name} was imported to look for a pipeline (its top-level code ran once) and "
        f"{incomplete or 'defines no pipeline'}: running it again, as a script"
    )
    return Script(path=file, args=tuple(args), note=note, incomplete_form=incomplete)


def _pipeline_in(module: Any, file: Path) -> Pipeline | None:
    """The pipeline an imported module defines, or None when it has no complete form."""
    name = file.stem
    if hasattr(module, "pipeline"):
        pipeline = _resolve(module.pipeline, "pipeline", file)
        if not isinstance(pipeline, Pipeline):
            raise PipelineLoadError(
                f"'pipeline' in {file} is a {type(pipeline).__name__}, not an accel.Pipeline",
                "set pipeline = accel.Pipeline(model=..., source=...) or a function returning one",
            )
        return pipeline.replace(name=name) if pipeline.name == "pipeline" else pipeline
    if not (hasattr(module, "model") and hasattr(module, "example_inputs")):
        return None
    model = _resolve(module.model, "model", file)
    inputs = _resolve(module.example_inputs, "example_inputs", file)
    if not callable(model):
        raise PipelineLoadError(
            f"'model' in {file} is a {type(model).__name__}, not a torch.nn.Module",
            "set model = MyNet() or a function returning one",
        )
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    if not isinstance(inputs, tuple) or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise PipelineLoadError(
            f"'example_inputs' in {file} must be a tuple of tensors, got {type(inputs).__name__}",
            "set example_inputs = (torch.randn(1, 3, 224, 224),)",
        )
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        return Pipeline(model=model, inputs=inputs, name=name)
    except PipelineError as exc:
        raise PipelineLoadError(exc.message, exc.hint) from exc


MINIMAL_FORM_HINT = (
    "the minimal form needs both: model (an nn.Module) and example_inputs (a tuple of tensors); "
    "to run the file as a training script instead: accel profile --script FILE"
)


def load_pipeline(path: str | os.PathLike) -> Pipeline:
    """Load the Pipeline a file defines (script-mode files are refused: they define none)."""
    target = find_target(path)
    if isinstance(target, Script) and target.incomplete_form:
        raise PipelineLoadError(f"{target.path} {target.incomplete_form}", MINIMAL_FORM_HINT)
    if isinstance(target, Script):
        raise PipelineLoadError(
            f"{target.path} defines no 'pipeline' and no 'model' with 'example_inputs'",
            "define pipeline = accel.Pipeline(...) in the file (accel profile can still run it as a script)",
        )
    return target
