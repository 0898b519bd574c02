"""The bad-input sweep: kinds of bad input a user (or an attacker) gives, each through the real console
script, each answered with one `error:` line and exit 2, no traceback, no process left running,
nothing written outside the output folder (the user's folder unchanged, $TMPDIR left empty).

It extends tests/cli/test_bad_input.py (pipeline files that fail to load under `accel profile`) to the
other commands and to the kinds the lock-is-untrusted-input review listed by name: output targets that
cannot be written, a broken lock, hints that name --force on a command without it, a model returning
None, a string or NaN (under optimize and profile), an empty .py, a baseline that fails under --recipe
latency|throughput, a decode that fails past the latency baseline's example batch, and a hung forward
or import under `accel bench --budget` (ended within the budget's hang limit, the stage named)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.security.sweep import HANG_BUDGET, LINEAR, Kind, check_kind
from tests.security.test_hangs import HUNG_FORWARD


def returning(value: str) -> str:
    return (
        "import torch\nclass M(torch.nn.Module):\n    def forward(self, x):\n"
        f"        return {value}\nmodel = M()\nexample_inputs = (torch.ones(2, 4),)\n"
    )


MODEL_RAISES = (
    "import torch\nclass M(torch.nn.Module):\n    def forward(self, x):\n"
    "        raise ValueError('mat1 and mat2 shapes cannot be multiplied')\nmodel = M()\n"
    "example_inputs = (torch.ones(2, 4),)\n"
)
DECODE_RAISES_AT_57 = (
    "import accel, torch\ndef decode(i):\n    if i == 57:\n        raise ValueError('sample 57 is corrupt')\n"
    "    return torch.ones(4)\n"
    "pipeline = accel.Pipeline(model=torch.nn.Linear(4, 2), source=list(range(256)), decode=decode, batch_size=4)\n"
)

HUNG_IMPORT = "import time\nimport torch\ntime.sleep(3600)\n" + LINEAR


def stale_lock(user: Path) -> None:
    """user/lock/accel.lock.yaml, written for pipe.py as it was before an edit (another sha256)."""
    from accel.optimizing.lock import Lock, write_lock

    (user / "lock").mkdir()
    lock = Lock(
        pipeline_file="pipe.py", pipeline_sha256="0" * 64, pipeline_path="pipe.py", entries=(), target="latency"
    )
    write_lock(user / "lock", lock)


def pipeline_lock(user: Path) -> None:
    from accel.optimizing.lock import Lock, file_sha256, write_lock

    (user / "lock").mkdir()
    lock = Lock(
        pipeline_file="pipe.py",
        pipeline_sha256=file_sha256(user / "pipe.py"),
        pipeline_path="pipe.py",
        entries=(),
        target="latency",
    )
    write_lock(user / "lock", lock)


P = "{user}/pipe.py"
QUICK_OPTIMIZE = ("--budget", "15")
KINDS = {
    # the model's output: nothing the guard could compare
    "model_returns_none": Kind(
        ("optimize", P, *QUICK_OPTIMIZE), ("the model returned None",), {"pipe.py": returning("None")}
    ),
    "model_returns_string": Kind(
        ("optimize", P, *QUICK_OPTIMIZE), ("the model returned a string",), {"pipe.py": returning("'text'")}
    ),
    "model_returns_empty_tuple": Kind(
        ("optimize", P, *QUICK_OPTIMIZE), ("the model returned an empty structure",), {"pipe.py": returning("()")}
    ),
    "model_returns_nan": Kind(
        ("optimize", P, *QUICK_OPTIMIZE), ("only NaN/inf",), {"pipe.py": returning("x * float('nan')")}
    ),
    # an empty file has no pipeline, under every command that loads one
    "empty_py_optimize": Kind(("optimize", P, *QUICK_OPTIMIZE), ("defines no pipeline",), {"pipe.py": ""}),
    "empty_py_bench": Kind(("bench", P, "--replicates", "1"), ("defines no pipeline",), {"pipe.py": ""}),
    # profile flags the same outputs, with optimize's message (not "no bottleneck")
    "profile_model_returns_none": Kind(
        ("profile", P, "--budget", "3", "--no-trace"), ("the model returned None",), {"pipe.py": returning("None")}
    ),
    "profile_model_returns_string": Kind(
        ("profile", P, "--budget", "3", "--no-trace"),
        ("the model returned a string",),
        {"pipe.py": returning("'text'")},
    ),
    "profile_model_returns_nan": Kind(
        ("profile", P, "--budget", "3", "--no-trace"), ("only NaN/inf",), {"pipe.py": returning("x * float('nan')")}
    ),
    # a hung forward, a hung import in a bench replicate: bounded by --budget, the stage named
    "bench_hung_forward_budget": Kind(
        ("bench", P, "--budget", f"{HANG_BUDGET:g}", "--replicates", "1"),
        ("model stage has not returned", "taken as hung"),
        {"pipe.py": HUNG_FORWARD},
        hangs=True,
    ),
    "bench_hung_import_budget": Kind(
        ("bench", P, "--budget", f"{HANG_BUDGET:g}", "--replicates", "1"),
        ("import stage has not returned", "taken as hung"),
        {"pipe.py": HUNG_IMPORT},
        hangs=True,
    ),
    # a baseline that fails under the latency and throughput recipes
    "forward_raises_latency": Kind(
        ("optimize", P, "--recipe", "latency", "--budget", "20"), ("raised", "mat1 and mat2"), {"pipe.py": MODEL_RAISES}
    ),
    "forward_raises_throughput": Kind(
        ("optimize", P, "--recipe", "throughput", "--budget", "20"),
        ("raised", "mat1 and mat2"),
        {"pipe.py": MODEL_RAISES},
    ),
    # the latency baseline times the example batch alone: the first candidate reading the source meets it
    "decode_raises_at_57_latency": Kind(
        ("optimize", P, "--recipe", "latency", "--only", "onnx.runtime", "--budget", "30"),
        ("the pipeline's decode raised", "sample 57 is corrupt"),
        {"pipe.py": DECODE_RAISES_AT_57},
        rows_before=True,
    ),
    "decode_raises_at_57_throughput": Kind(
        ("optimize", P, "--recipe", "throughput", "--budget", "20"),
        ("sample 57 is corrupt",),
        {"pipe.py": DECODE_RAISES_AT_57},
    ),
    "forward_raises_bench": Kind(("bench", P, "--replicates", "1"), ("mat1 and mat2",), {"pipe.py": MODEL_RAISES}),
    # scripts that end badly
    "script_exit_status": Kind(
        ("profile", P, "--budget", "5", "--no-trace"),
        ("exited with status 3",),
        {"pipe.py": "import sys\nsys.exit(3)\n"},
    ),
    "script_os_exit": Kind(
        ("profile", P, "--budget", "5", "--no-trace"), ("os._exit(0)",), {"pipe.py": "import os\nos._exit(0)\n"}
    ),
    # recipes
    "recipe_not_utf8": Kind(
        ("optimize", P, "--recipe", "{user}/r.yaml"),
        ("is not UTF-8 text",),
        {"pipe.py": LINEAR, "r.yaml": b"name: r\n# \xff\xfe\nrules: []\n"},
    ),
    "recipe_not_a_mapping": Kind(
        ("optimize", P, "--recipe", "{user}/r.yaml"), ("r.yaml",), {"pipe.py": LINEAR, "r.yaml": "- a\n- b\n"}
    ),
    "recipe_unknown_name": Kind(("optimize", P, "--recipe", "fastest"), ("fastest",)),
    # locks: broken, stale (no --force hint where the command has none), of the wrong kind
    "verify_corrupt_lock": Kind(
        ("verify", "{user}/accel.lock.yaml"),
        ("accel.lock.yaml",),
        {"pipe.py": LINEAR, "accel.lock.yaml": "{{{ not yaml"},
    ),
    "verify_stale_lock": Kind(("verify", "{user}/lock"), ("changed since",), setup=stale_lock, absent=("--force",)),
    "bench_stale_lock": Kind(
        ("bench", P, "--lock", "{user}/lock", "--replicates", "1"),
        ("changed since",),
        setup=stale_lock,
        absent=("--force",),
    ),
    "run_stale_lock": Kind(("run", P, "--lock", "{user}/lock"), ("is a pipeline lock",), setup=pipeline_lock),
    # output targets that cannot be written, refused before the work
    "json_is_a_folder": Kind(
        ("profile", P, "--budget", "1", "--no-trace", "--json", "{user}/folder"),
        ("--json",),
        setup=lambda u: (u / "folder").mkdir(),
    ),
    "json_under_a_file": Kind(
        ("profile", P, "--budget", "1", "--no-trace", "--json", "{user}/pipe.py/r.json"), ("--json",)
    ),
    "html_under_a_file": Kind(
        ("profile", P, "--budget", "1", "--no-trace", "--html", "{user}/pipe.py/r.html"), ("--html",)
    ),
    "trace_dir_under_a_file": Kind(
        ("profile", P, "--budget", "1", "--trace-dir", "{user}/pipe.py/t"), ("--trace-dir",)
    ),
    "out_under_a_file": Kind(("optimize", P, "--budget", "5", "--out", "{user}/pipe.py/o"), ("--out",)),
    "save_baseline_is_a_folder": Kind(
        ("bench", P, "--save-baseline", "{user}/folder"), ("--save-baseline",), setup=lambda u: (u / "folder").mkdir()
    ),
    # the gate's inputs
    "gate_corrupt_baseline": Kind(
        ("gate", P, "--baseline", "{user}/b.json"), ("b.json",), {"pipe.py": LINEAR, "b.json": "{not json"}
    ),
    "gate_missing_baseline": Kind(("gate", P, "--baseline", "{user}/none.json"), ("none.json",)),
    "gate_against_outside_git": Kind(("gate", P, "--against", "HEAD"), ("git",)),
    # files that are not there or not Python
    "bench_missing_file": Kind(("bench", "{user}/missing.py"), ("no such file",)),
    "verify_missing_lock": Kind(("verify", "{user}/none.lock.yaml"), ("no such lock file",)),
    "profile_not_python": Kind(("profile", "{user}/notes.txt"), ("is not a Python file",), {"notes.txt": "hello"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(KINDS))
def test_each_kind_is_one_line_exit_2_and_leaves_nothing(tmp_path, name):
    check_kind(tmp_path, KINDS[name])


def test_the_sweep_covers_every_command_that_takes_user_files():
    commands = {kind.args[0] for kind in KINDS.values()}
    assert commands >= {"profile", "optimize", "bench", "gate", "verify", "run"}
    assert len(KINDS) >= 30
