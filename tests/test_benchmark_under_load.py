"""benchmarks/under_load.py without its slow decisions: the burner starts and leaves no process
behind, and the verdicts compare as the table says."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from benchmarks import under_load
from benchmarks.under_load import ABSTAINED, Outcome, compare


def _gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_burner_starts_and_is_cleaned_up_whole():
    with under_load.burning(2) as burners:
        time.sleep(0.3)
        assert len(burners) == 2 and all(p.poll() is None for p in burners)
        assert all(os.getpgid(p.pid) == p.pid for p in burners)  # each in its own process group
    assert all(p.returncode is not None for p in burners)  # killed and reaped
    assert all(_gone(p.pid) for p in burners)


def test_burner_is_cleaned_up_when_the_body_raises():
    with pytest.raises(RuntimeError), under_load.burning(1) as burners:
        raise RuntimeError("a decision failed")
    assert burners[0].returncode is not None and _gone(burners[0].pid)


def test_a_burner_ends_with_its_parent_even_one_killed_outright():
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nfrom benchmarks import under_load\n"
            "print(under_load.start_burners(1)[0].pid, flush=True)\ntime.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        pid = int(parent.stdout.readline())
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
    deadline = time.monotonic() + 10.0  # one check per million iterations: well under a second idle
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not _gone(pid):  # never leave it behind, even when the test fails
        os.killpg(pid, 9)
        pytest.fail("a burner outlived its killed parent")


def test_compare():
    assert compare(Outcome("compute_bound"), Outcome("compute_bound")) == "same"
    assert compare(Outcome("compute_bound"), Outcome("none", frozenset({"compute_bound"}))) == "abstained (too noisy)"
    assert compare(Outcome("pass"), Outcome("invalid", ABSTAINED)) == "abstained (too noisy)"
    assert compare(Outcome("compute_bound"), Outcome("none", frozenset({"memory_bandwidth"}))) == "flipped"
    assert compare(Outcome("accepted: faster"), Outcome("reverted: within noise")) == "flipped"
    # both sides "none" only because each withheld the planted finding: no decision was made
    both_withheld = Outcome("none", frozenset({"compute_bound", "none"}))
    assert compare(both_withheld, both_withheld) == "abstained (too noisy)"
    assert both_withheld.describe() == "none (compute_bound too noisy)"
    # a finding withheld beside a primary that stands does not undo it
    assert compare(Outcome("input_decoding"), Outcome("input_decoding", frozenset({"compute_bound"}))) == "same"
