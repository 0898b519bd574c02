"""Fingerprints of code: a hash of what a callable computes, for cache.decoded's namespace.

The hash covers bytecode, constants, defaults, closure values and the globals a function reads,
recursively through helper functions, the state of callable objects, and the installed version of
every library package the code reaches (a new Pillow must not serve records an old one decoded).
"""

from __future__ import annotations

import functools
import importlib.metadata
import sys
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import torch

from accel.core.errors import CacheError
from accel.core.hashing import content_digest, new_sha256

_MAX_FINGERPRINT_DEPTH = 6


# --- fingerprints of code --------------------------------------------------------------------------
class CodeFingerprint:
    """A hash of what a callable computes: bytecode, constants, closures and the globals it reads."""

    def __init__(self) -> None:
        self.hash = new_sha256()
        self.seen: set[int] = set()

    def feed(self, obj: Any, depth: int = 0) -> None:
        if depth > _MAX_FINGERPRINT_DEPTH:
            self._add("deep", type(obj).__qualname__)
            return
        if id(obj) in self.seen and not isinstance(obj, (int, float, str, bytes, bool, type(None))):
            self._add("seen", type(obj).__qualname__)
            return
        self.seen.add(id(obj))
        if isinstance(obj, types.FunctionType):
            self._function(obj, depth)
        elif isinstance(obj, types.MethodType):
            self.feed(obj.__func__, depth + 1)
            self._state(obj.__self__, depth + 1)
        elif isinstance(obj, functools.partial):
            self.feed(obj.func, depth + 1)
            self._value(obj.args, depth + 1)
            self._value(obj.keywords, depth + 1)
        elif isinstance(obj, (types.BuiltinFunctionType, type)):
            module = getattr(obj, "__module__", None) or ""
            self._add("named", module, obj.__qualname__, package_version(module))
        elif callable(obj):
            self.feed(type(obj).__call__, depth + 1)
            self._state(obj, depth + 1)
        else:
            self._value(obj, depth + 1)

    def hexdigest(self) -> str:
        return self.hash.hexdigest()

    def _add(self, *parts: Any) -> None:
        self.hash.update(repr(parts).encode())

    def _function(self, fn: types.FunctionType, depth: int) -> None:
        self._add("function", _module_label(fn.__module__), fn.__qualname__, package_version(fn.__module__))
        self._code(fn.__code__)
        self._value(fn.__defaults__, depth + 1)
        self._value(fn.__kwdefaults__, depth + 1)
        for cell in fn.__closure__ or ():
            try:
                self._value(cell.cell_contents, depth + 1)
            except ValueError:  # an empty cell
                self._add("empty-cell")
        for name in sorted(_global_names(fn.__code__)):
            if name in fn.__globals__:
                self._add("global", name)
                self._value(fn.__globals__[name], depth + 1)

    def _code(self, code: types.CodeType) -> None:
        self.hash.update(code.co_code)
        self._add(code.co_names, code.co_varnames)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                self._code(const)
            else:
                self._add("const", const)

    def _value(self, value: Any, depth: int) -> None:
        if isinstance(value, types.ModuleType):
            self._add("module", value.__name__, package_version(value.__name__))
        elif isinstance(value, (types.FunctionType, types.MethodType, functools.partial)):
            self.feed(value, depth)
        elif isinstance(value, type):
            self._add("class", _module_label(value.__module__), value.__qualname__, package_version(value.__module__))
            if _is_user_module(value.__module__):  # a class from the user's own code: hash its methods too
                for name, member in sorted(vars(value).items()):
                    if isinstance(member, (types.FunctionType, staticmethod, classmethod)):
                        self._add("method", name)
                        self.feed(getattr(member, "__func__", member), depth + 1)
        elif isinstance(value, torch.nn.Module):
            self._add("module-object", type(value).__qualname__, repr(value))
            for name, tensor in value.state_dict().items():
                self._add("param", name, content_digest(tensor))
        else:
            content = content_digest(value)
            if content is not None:
                self._add("value", content)
            elif isinstance(value, Mapping) or isinstance(value, (list, tuple)):
                for item in value.items() if isinstance(value, Mapping) else value:
                    self._value(item, depth + 1)
            elif callable(value):
                self.feed(value, depth)
            else:
                self._state(value, depth)

    def _state(self, obj: Any, depth: int) -> None:
        self._add("object", _module_label(type(obj).__module__), type(obj).__qualname__)
        state = getattr(obj, "__dict__", None)
        if state is None:
            text = repr(obj)
            if " at 0x" in text:
                raise CacheError(
                    f"cannot fingerprint a {type(obj).__name__} the cached code uses",
                    "use plain functions, constants and tensors in decode/transform",
                )
            self._add("repr", text)
            return
        for name in sorted(state):
            self._add("attribute", name)
            self._value(state[name], depth + 1)


@functools.lru_cache(maxsize=None)
def package_version(module: str | None) -> str:
    """The installed version of the package a module belongs to ('' for the user's own code)."""
    if not module or _is_user_module(module):
        return ""
    top = module.split(".")[0]
    version = getattr(sys.modules.get(top), "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version(top)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return ""


def _module_label(name: str | None) -> str:
    """A module's file name: a pipeline file loaded twice gets two module names but one file."""
    module = sys.modules.get(name or "")
    file = getattr(module, "__file__", None)
    return Path(file).name if file else (name or "")


def _is_user_module(name: str | None) -> bool:
    file = getattr(sys.modules.get(name or ""), "__file__", None) or ""
    return (
        bool(file)
        and "site-packages" not in file
        and not file.startswith(sys.prefix)
        and not file.startswith(sys.base_prefix)
    )


def _global_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _global_names(const)
    return names


def code_digest(*stages: Callable[..., Any]) -> str:
    fingerprint = CodeFingerprint()
    for stage in stages:
        fingerprint.feed(stage)
    return fingerprint.hexdigest()
