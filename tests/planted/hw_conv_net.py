"""Planted: examples/conv_net.py (see its docstring for the expected finding)."""

import runpy
from pathlib import Path

pipeline = runpy.run_path(str(Path(__file__).resolve().parents[2] / "examples" / "conv_net.py"))["pipeline"]
