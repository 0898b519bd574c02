"""accel: find why a PyTorch pipeline is slow or big, make it faster, and keep it fast in CI."""

from __future__ import annotations

from accel._version import __version__
from accel.core.errors import AccelError
from accel.core.pipeline import Pipeline
from accel.optimizing.lock import load
from accel.optimizing.run import optimize
from accel.profiling.report import Finding, Report, Stage
from accel.profiling.run import profile

__all__ = ["AccelError", "Finding", "Pipeline", "Report", "Stage", "__version__", "load", "optimize", "profile"]
