"""Planted: examples/highres_cnn.py (see its docstring for the expected finding)."""

import runpy
from pathlib import Path

pipeline = runpy.run_path(str(Path(__file__).resolve().parents[2] / "examples" / "highres_cnn.py"))["pipeline"]
