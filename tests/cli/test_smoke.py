"""The package imports and the CLI answers, as a subprocess (accel and python -m accel)."""

import subprocess
import sys


def test_python_m_accel_help():
    result = subprocess.run([sys.executable, "-m", "accel", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "profile" in result.stdout
