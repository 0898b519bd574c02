"""The README's Python API example runs as written (after `accel examples ./accel-examples`), in a
fresh process: profile, optimize with a lock, load the lock and call the optimized model."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from accel.core.examples import copy_examples
from tests.paths import ROOT

BLOCK = re.compile(r"<!-- api-example -->\s*```python\n(.*?)```\s*<!-- /api-example -->", re.S)


def test_the_readme_documents_profile_optimize_and_load():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("accel.profile(", "accel.optimize(", "accel.load("):
        assert name in text.split("## The Python API", 1)[1].split("\n## ", 1)[0], name


@pytest.mark.slow
def test_the_readme_api_example_runs(tmp_path):
    (code,) = BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    copy_examples(tmp_path / "accel-examples")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Report(target='wide_mlp', mode='pipeline'") and len(lines[0]) < 300, lines[0]
    assert lines[1].startswith("OptimizeResult(name='wide_mlp', recipe='latency'") and len(lines[1]) < 300, lines[1]
    assert lines[2].endswith(" (1, 2048)"), lines[2]
    assert (tmp_path / "accel-runs" / "wide_mlp" / "accel.lock.yaml").is_file()
