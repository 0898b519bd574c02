"""Build hook only (the metadata is in pyproject.toml): the wheel ships the repository's examples/
as package data in accel/examples/, so `accel demo` and `accel examples` have files to run after a
plain `pip install`. One copy lives in the source; this copies it at build time."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

EXAMPLES = Path(__file__).resolve().parent / "examples"


class BuildPyWithExamples(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "accel" / "examples"
        self.mkpath(str(target))
        for example in sorted(EXAMPLES.glob("*.py")):
            self.copy_file(str(example), str(target / example.name))


setup(cmdclass={"build_py": BuildPyWithExamples})
