"""torch.profiler's own notes, and the libraries' routine warnings, kept out of the user's terminal.

Each start and stop of torch.profiler prints a line from C++ straight to the process's stderr
(`USDT:<time> <pid>:<tid> SyncActivityProfilerHandler.cpp:52] profiler_start`), one pair per
profiler pass, on every `accel profile`. `quiet_profiler(prof)` starts and stops a profiler with
file descriptor 2 pointed at a temporary file, then writes back every other line it caught (a
warning the user should see still reaches the terminal).

`quiet_libraries()` is put around accel's own commands: transformers' generation advice ("Setting
`pad_token_id` to `eos_token_id`", "The attention mask ... not set") and ONNX Runtime's graph
notes (`CanUpdateImplicitInputName`, removed initializers), printed on every run of a model that
accel exports or generates with, are raised to errors-only while it runs, and put back after. The
Python API's entry points (`accel.profile`, `accel.optimize`, `accel.load`) are wrapped in it by the
`quietly` decorator; nested (a command calling the API), only the outermost block sets and restores.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
import tempfile
import warnings
from typing import Any, Callable, Iterator, ParamSpec, TypeVar

# The lines torch.profiler prints at start and stop (kineto's USDT probes' log lines), wherever they
# start: on a terminal, the live status line's redraws (no newline of their own) land in the same
# capture, and a note follows the redraw on its line.
PROFILER_NOTE = re.compile(rb"USDT:[^\n]*?\bprofiler_(?:start|stop)[ \t\r]*(?:\n|$)")


@contextlib.contextmanager
def quiet_profiler(prof: Any) -> Iterator[Any]:
    """Enter and leave the torch.profiler `prof` with its start and stop notes dropped."""
    with notes_dropped():
        entered = prof.__enter__()
    try:
        yield entered
    finally:
        with notes_dropped():
            prof.__exit__(*sys.exc_info())


@contextlib.contextmanager
def notes_dropped(fd: int = 2) -> Iterator[None]:
    """Capture what is written to `fd` during the block; write back all but torch.profiler's notes."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), fd)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)
            caught.seek(0)
            kept = PROFILER_NOTE.sub(b"", caught.read())
            if kept:
                os.write(fd, kept)


# ONNX Runtime's logger severities: 2 warning (its default), 3 error.
ORT_WARNING, ORT_ERROR = 2, 3
TRANSFORMERS_VERBOSITY = "TRANSFORMERS_VERBOSITY"


_P = ParamSpec("_P")
_R = TypeVar("_R")
# How many quiet_libraries blocks are open: only the outermost sets the libraries and puts them back.
_depth = [0]


def quietly(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """`function` run inside quiet_libraries (the Python API's entry points)."""

    @functools.wraps(function)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with quiet_libraries():
            return function(*args, **kwargs)

    return run


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """transformers and ONNX Runtime at errors only during the block (a transformers imported later
    reads the environment variable; one imported already is set directly), then as they were."""
    _depth[0] += 1
    try:
        if _depth[0] > 1:  # inside another block: the libraries are quiet already, and it puts them back
            yield
        else:
            with _libraries_quiet():
                yield
    finally:
        _depth[0] -= 1


@contextlib.contextmanager
def _libraries_quiet() -> Iterator[None]:
    saved_env = os.environ.get(TRANSFORMERS_VERBOSITY)
    os.environ[TRANSFORMERS_VERBOSITY] = "error"
    transformers_logging = _transformers_logging()
    saved_verbosity = transformers_logging.get_verbosity() if transformers_logging else None
    if transformers_logging:
        transformers_logging.set_verbosity_error()
    ort = _onnxruntime()
    if ort is not None:
        ort.set_default_logger_severity(ORT_ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"transformers\.generation")
            yield
    finally:
        if ort is not None:
            ort.set_default_logger_severity(ORT_WARNING)
        if saved_env is None:
            os.environ.pop(TRANSFORMERS_VERBOSITY, None)
        else:
            os.environ[TRANSFORMERS_VERBOSITY] = saved_env
        transformers_logging = _transformers_logging()
        if transformers_logging is not None:
            default = transformers_logging.log_levels.get(saved_env or "", transformers_logging.WARNING)
            transformers_logging.set_verbosity(saved_verbosity if saved_verbosity is not None else default)


def _transformers_logging() -> Any:
    """transformers' logging module when transformers is imported already (never imported here)."""
    if "transformers" not in sys.modules:
        return None
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:
        return None
    return transformers_logging


def _onnxruntime() -> Any:
    """onnxruntime (a dependency, imported here so its logger is set before any session is made)."""
    try:
        import onnxruntime
    except ImportError:
        return None
    return onnxruntime
