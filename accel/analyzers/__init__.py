"""Analyzers: one module per finding kind, each registered by name.

An analyzer is a pure function `analyze(data: ProfileData, machine: Machine) -> list[Finding]`: it
reads measurements and does no timing, so it can be tested on recorded measurements. Every module
in this package is imported here, which registers it.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

from accel.machine import Machine
from accel.registry import Registry
from accel.report import Finding
from accel.stages import ProfileData

Analyzer = Callable[[ProfileData, Machine], list[Finding]]

ANALYZERS: Registry[Analyzer] = Registry("analyzer")


def analyze(data: ProfileData, machine: Machine, names: list[str] | None = None) -> list[Finding]:
    """Run the analyzers (all by default) and return their findings, highest impact first."""
    findings: list[Finding] = []
    for name in names or ANALYZERS.names():
        findings.extend(ANALYZERS.get(name)(data, machine))
    return sorted(findings, key=lambda f: (-f.impact, f.kind))


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
