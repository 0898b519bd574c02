"""accel: find why a PyTorch pipeline is slow or big, make it faster, and keep it fast in CI."""
from __future__ import annotations

__version__ = "0.1.0"

from accel.errors import AccelError  # noqa: E402
from accel.loading import load  # noqa: E402
from accel.optimizing import optimize  # noqa: E402
from accel.pipeline import Pipeline  # noqa: E402
from accel.profiling import profile  # noqa: E402
from accel.report import Finding, Report, Stage  # noqa: E402

__all__ = ["AccelError", "Finding", "Pipeline", "Report", "Stage", "__version__", "load", "optimize", "profile"]
