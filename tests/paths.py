"""Where the tests' inputs live, for test modules at any depth."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
PLANTED = TESTS / "planted"
REAL = TESTS / "real"
EXAMPLES = ROOT / "examples"
