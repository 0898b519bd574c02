"""The bad-input sweep, part B: `accel bench`, `gate`, `verify` and `run`, and crafted or broken
locks, baselines and script locks read through them, each through the real console script and
held to the sweep's checks (one `error:` line naming the problem and the fix, exit 2, no traceback,
no process left, the user's folder unchanged, nothing in $TMPDIR).

A code-running attempt (a lock naming a class in a module of the user's folder, a lock whose
pipeline path names a file elsewhere) plants a module or a file that writes MARKER beside itself:
the unchanged user folder is the proof that nothing ran. The locks are written by hand around a
tiny ONNX export of a linear model (made once per test session), then edited as an attacker or a
clumsy user would."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from tests.security.crafted_locks import (
    baseline,
    cache_dir_elsewhere,
    crafted,
    evil_elsewhere,
    git_repo,
    lock_symlink,
    marker_module,
    onnx_a_folder,
    onnx_moved,
    onnx_symlink_out,
    onnx_truncated,
    onnx_unlisted,
    pipeline_file_dotdot,
    raw,
    removing,
    replicate_field,
    setting,
    state_setting,
    structure_class,
)
from tests.security.sweep import LINEAR, Kind, check_kind

OTHER = LINEAR.replace("Linear(4, 2)", "Linear(4, 3)")
SCRIPT = "import torch\nx = torch.ones(2)\n"
P = "{user}/pipe.py"
L = "{user}/out"  # the lock's folder


V = ("verify", L, "--budget", "1")
BENCH_LOCK = ("bench", P, "--lock", L, "--replicates", "1", "--counts-only")
RUN_LOCK = ("run", "{user}/train.py", "--lock", L)
GATE = ("gate", P, "--baseline", "{user}/b.json")
S = {"pipe.py": LINEAR}
T = {"train.py": SCRIPT}
KINDS_B = {
    # the lock file's shape
    "lock_empty": Kind(V, ("accel.lock.yaml", "not an accel lock"), setup=raw("")),
    "lock_a_list": Kind(V, ("accel.lock.yaml", "not an accel lock"), setup=raw("- a\n- b\n")),
    "lock_binary": Kind(BENCH_LOCK, ("accel.lock.yaml",), setup=raw(bytes(range(256)) * 4)),
    "lock_not_utf8": Kind(V, ("accel.lock.yaml", "UTF-8"), setup=raw(b"schema: accel.lock/1\n# \xff\xfe\n")),
    "lock_huge": Kind(V, ("accel.lock.yaml", "MB"), setup=raw("# padding\n" * 3_000_000)),
    "lock_deeply_nested": Kind(V, ("accel.lock.yaml",), setup=raw("a: " + "[" * 20000)),
    "lock_python_tag": Kind(
        V, ("accel.lock.yaml",), setup=raw("!!python/object/apply:os.system ['touch {user}/MARKER']\n")
    ),
    "lock_alias_bomb": Kind(
        V,
        ("accel.lock.yaml",),
        setup=raw(
            "a: &a ['x','x','x','x','x','x','x','x','x']\n"
            + "".join(
                f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},"
                f"*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)},*{chr(97 + i)}]\n"
                for i in range(8)
            )
        ),
    ),
    "lock_unknown_key": Kind(V, ("accel.lock.yaml", "evil"), setup=crafted(setting("evil", value="x"))),
    "lock_future_schema": Kind(V, ("accel.lock/2",), setup=crafted(setting("schema", value="accel.lock/2"))),
    "lock_no_pipeline": Kind(V, ("pipeline",), setup=crafted(removing("pipeline"))),
    "lock_no_optimizations": Kind(V, ("optimizations",), setup=crafted(removing("optimizations"))),
    "lock_optimizations_a_mapping": Kind(
        V, ("optimizations",), setup=crafted(setting("optimizations", value={"a": 1}))
    ),
    "lock_sha256_a_number": Kind(V, ("sha256",), setup=crafted(setting("pipeline", "sha256", value=12))),
    "lock_pipeline_file_a_list": Kind(V, ("pipeline.file",), setup=crafted(setting("pipeline", "file", value=[1]))),
    "lock_weights_sha256_a_number": Kind(
        V, ("weights_sha256",), setup=crafted(setting("pipeline", "weights_sha256", value=7))
    ),
    "lock_entry_a_string": Kind(V, ("optimization 1",), setup=crafted(setting("optimizations", "0", value="x"))),
    "lock_entry_unknown_optimizer": Kind(
        V, ("nosuch.optimizer",), setup=crafted(setting("optimizations", "0", "optimizer", value="nosuch.optimizer"))
    ),
    "lock_params_unknown_key": Kind(
        BENCH_LOCK, ("bogus",), setup=crafted(setting("optimizations", "0", "params", value={"bogus": 1}))
    ),
    "lock_params_wrong_type": Kind(
        V, ("threads",), setup=crafted(setting("optimizations", "0", "params", value={"threads": "many"}))
    ),
    "lock_state_a_list": Kind(V, ("optimization 1",), setup=crafted(setting("optimizations", "0", "state", value=[]))),
    "lock_state_session_options_a_string": Kind(
        V, ("onnx.runtime",), setup=crafted(state_setting("session_options", "fast"))
    ),
    "lock_speedup_a_string": Kind(V, ("speedup",), setup=crafted(setting("speedup", value="fast"))),
    "lock_min_speedup_a_string": Kind(V, ("min_speedup",), setup=crafted(setting("min_speedup", value="fast"))),
    "lock_versions_a_list": Kind(V, ("versions",), setup=crafted(setting("versions", value=["torch"]))),
    "lock_artifacts_a_list": Kind(V, ("artifacts",), setup=crafted(setting("artifacts", value=["model.onnx"]))),
    "lock_kind_unknown": Kind(V, ("kind",), setup=crafted(setting("kind", value="trainer"))),
    "lock_target_unknown": Kind(V, ("target",), setup=crafted(setting("target", value="speed"))),
    # names of classes: never imported (a module of the user's folder would write MARKER)
    "lock_class_os_system": Kind(V, ("os:system",), setup=crafted(structure_class("os:system"))),
    "lock_class_subprocess": Kind(
        BENCH_LOCK, ("subprocess:Popen",), setup=crafted(structure_class("subprocess:Popen"))
    ),
    "lock_class_this": Kind(V, ("this:s",), setup=crafted(structure_class("this:s"))),
    "lock_class_user_module": Kind(BENCH_LOCK, ("marker_mod:Out",), setup=crafted(marker_module)),
    # the pipeline the lock names: never run from the lock's paths
    "lock_pipeline_path_elsewhere": Kind(V, ("cannot find the pipeline file",), setup=crafted(evil_elsewhere)),
    "lock_pipeline_file_dotdot": Kind(V, ("cannot find the pipeline file",), setup=crafted(pipeline_file_dotdot)),
    # the files the lock names: inside its folder, listed, hashed, ONNX
    "onnx_file_absolute": Kind(V, ("onnx_file", "no absolute path"), setup=crafted(onnx_moved("absolute"))),
    "onnx_file_dotdot": Kind(BENCH_LOCK, ("onnx_file", "'..'"), setup=crafted(onnx_moved("dotdot"))),
    "onnx_file_unlisted": Kind(V, ("onnx_file", "do not list"), setup=crafted(onnx_unlisted)),
    "onnx_file_missing": Kind(
        V, ("model.onnx", "missing"), setup=crafted(lambda d, u: (u / "out/model.onnx").unlink())
    ),
    "onnx_file_truncated": Kind(BENCH_LOCK, ("model.onnx", "changed since"), setup=crafted(onnx_truncated(False))),
    "onnx_file_truncated_rehashed": Kind(V, ("model.onnx", "not an ONNX file"), setup=crafted(onnx_truncated(True))),
    "onnx_file_a_folder": Kind(V, ("model.onnx",), setup=crafted(onnx_a_folder)),
    "onnx_file_symlink_out": Kind(V, ("leads out of the lock's folder",), setup=crafted(onnx_symlink_out)),
    "artifact_sha256_differs": Kind(
        BENCH_LOCK, ("changed since",), setup=crafted(setting("artifacts", "model.onnx", value="0" * 64))
    ),
    "artifact_outside_folder": Kind(
        V, ("artifacts entry '../pipe.py'",), setup=crafted(setting("artifacts", "../pipe.py", value="0" * 64))
    ),
    "artifact_etc_passwd": Kind(
        V, ("/etc/passwd",), setup=crafted(setting("artifacts", "/etc/passwd", value="0" * 64))
    ),
    "lock_cache_dir_elsewhere": Kind(V, ("cache_dir",), setup=crafted(cache_dir_elsewhere, onnx=False)),
    # where the lock is
    "lock_symlink_to_etc_passwd": Kind(V, ("not an accel lock",), setup=lock_symlink("/etc/passwd")),
    "lock_folder_is_a_file": Kind(
        ("bench", P, "--lock", "{user}/pipe.py/accel.lock.yaml", "--counts-only"), ("no such lock file",)
    ),
    "lock_is_a_fifo": Kind(
        V, ("accel.lock.yaml",), setup=lambda u: ((u / "out").mkdir(), os.mkfifo(u / "out/accel.lock.yaml"))
    ),
    "lock_for_another_pipeline": Kind(
        ("bench", "{user}/other.py", "--lock", L, "--counts-only"),
        ("is a lock for pipe.py, not other.py",),
        {"pipe.py": LINEAR, "other.py": OTHER},
        setup=crafted(lambda d, u: None),
    ),
    # accel verify's own inputs
    "verify_pipeline_missing": Kind(
        (*V, "--pipeline", "{user}/none.py"), ("none.py",), setup=crafted(lambda d, u: None)
    ),
    "verify_pipeline_another_file": Kind(
        (*V, "--pipeline", "{user}/other.py"),
        ("not other.py",),
        {"pipe.py": LINEAR, "other.py": OTHER},
        setup=crafted(lambda d, u: None),
    ),
    "verify_script_lock": Kind(V, ("script",), T, setup=crafted(lambda d, u: None, script=True)),
    "verify_budget_nan": Kind(("verify", L, "--budget", "nan"), ("--budget",), setup=crafted(lambda d, u: None)),
    # accel run
    "run_missing_script": Kind(
        ("run", "{user}/none.py", "--lock", L), ("none.py",), T, setup=crafted(lambda d, u: None, script=True)
    ),
    "run_missing_lock": Kind(("run", "{user}/train.py", "--lock", "{user}/none"), ("no such lock file",), T),
    "run_lock_for_another_script": Kind(
        ("run", "{user}/other.py", "--lock", L),
        ("written for train.py, not other.py",),
        {**T, "other.py": SCRIPT},
        setup=crafted(lambda d, u: None, script=True),
    ),
    "run_script_raises": Kind(
        RUN_LOCK,
        ("raised ValueError", "bad row"),
        {"train.py": "raise ValueError('bad row')\n"},
        setup=crafted(lambda d, u: None, script=True),
    ),
    "run_script_exits_3": Kind(
        RUN_LOCK,
        ("exited with status 3",),
        {"train.py": "import sys\nsys.exit(3)\n"},
        setup=crafted(lambda d, u: None, script=True),
    ),
    "run_script_os_exit": Kind(
        RUN_LOCK,
        ("os._exit(0)",),
        {"train.py": "import os\nos._exit(0)\n"},
        setup=crafted(lambda d, u: None, script=True),
    ),
    "run_loader_state_wrong_type": Kind(
        RUN_LOCK, ("num_workers",), T, setup=crafted(state_setting("num_workers", "lots"), script=True)
    ),
    "run_loader_state_unknown_key": Kind(
        RUN_LOCK, ("script.loader",), T, setup=crafted(state_setting("shell", "rm -rf /"), script=True)
    ),
    # accel bench's flags
    "bench_replicates_zero": Kind(("bench", P, "--replicates", "0"), ("--replicates",)),
    "bench_replicates_abc": Kind(("bench", P, "--replicates", "abc"), ("--replicates",)),
    "bench_replicates_huge": Kind(("bench", P, "--replicates", "1000000000"), ("--replicates",)),
    "bench_budget_nan": Kind(("bench", P, "--budget", "nan"), ("--budget",)),
    "bench_budget_inf": Kind(("bench", P, "--budget", "inf"), ("--budget",)),
    "bench_runs_without_baseline": Kind(("bench", P, "--runs", "3"), ("--save-baseline",)),
    "bench_save_baseline_read_only": Kind(
        ("bench", P, "--save-baseline", "{user}/ro/b.json"),
        ("--save-baseline",),
        setup=lambda u: (u / "ro").mkdir(),
        read_only=("ro",),
    ),
    "bench_json_under_a_file": Kind(("bench", P, "--json", "{user}/pipe.py/r.json"), ("--json",)),
    "bench_merge_corrupt_baseline": Kind(
        ("bench", P, "--save-baseline", "{user}/b.json", "--merge"), ("b.json",), setup=baseline(text="{not json")
    ),
    "bench_lock_missing": Kind(("bench", P, "--lock", "{user}/none", "--counts-only"), ("no such lock file",)),
    # the gate's baselines
    "gate_baseline_empty": Kind(GATE, ("b.json",), setup=baseline(text="")),
    "gate_baseline_a_list": Kind(GATE, ("b.json",), setup=baseline(text="[1, 2]")),
    "gate_baseline_not_utf8": Kind(GATE, ("b.json",), setup=baseline(text=b'{"a": "\xff"}')),
    "gate_baseline_no_runs": Kind(GATE, ("b.json", "corrupt"), setup=baseline(lambda d: d.pop("runs"))),
    "gate_baseline_future_schema": Kind(
        GATE, ("accel.baseline/3",), setup=baseline(lambda d: d.update(schema="accel.baseline/3"))
    ),
    "gate_baseline_nan_times": Kind(
        GATE, ("b.json", "replicate"), setup=baseline(replicate_field("median_seconds", math.nan))
    ),
    "gate_baseline_negative_times": Kind(
        GATE, ("b.json", "replicate"), setup=baseline(replicate_field("median_seconds", -1.0))
    ),
    "gate_baseline_calls_a_string": Kind(GATE, ("b.json", "calls"), setup=baseline(replicate_field("calls", "many"))),
    "gate_baseline_another_pipeline": Kind(
        GATE, ("b.json", "other.py"), setup=baseline(lambda d: d.update(target="other.py"))
    ),
    "gate_baseline_a_folder": Kind(GATE, ("b.json",), setup=lambda u: (u / "b.json").mkdir()),
    # the gate against a git ref
    "gate_against_bad_ref": Kind(("gate", P, "--against", "no-such-ref"), ("no-such-ref",), setup=git_repo(True)),
    "gate_against_file_not_in_ref": Kind(("gate", P, "--against", "HEAD"), ("pipe.py",), setup=git_repo(False)),
    "gate_baseline_and_against": Kind(
        ("gate", P, "--baseline", "{user}/b.json", "--against", "HEAD"), ("--against",), setup=baseline(text="{}")
    ),
    "gate_neither_baseline_nor_against": Kind(("gate", P), ("--baseline",)),
    "gate_max_slowdown_abc": Kind((*GATE, "--max-slowdown", "abc"), ("--max-slowdown",), setup=baseline(text="{}")),
    "gate_max_slowdown_negative": Kind(
        (*GATE, "--max-slowdown", "-5%"), ("--max-slowdown",), setup=baseline(text="{}")
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(KINDS_B))
def test_each_kind_b_is_one_line_exit_2_and_leaves_nothing(tmp_path, name):
    check_kind(tmp_path, KINDS_B[name])


def test_part_b_adds_its_kinds_and_covers_its_commands():
    from tests.security import test_bad_input_sweep, test_bad_input_sweep_a

    assert not set(KINDS_B) & (set(test_bad_input_sweep.KINDS) | set(test_bad_input_sweep_a.KINDS))
    assert len(KINDS_B) >= 45
    assert {kind.args[0] for kind in KINDS_B.values()} >= {"bench", "gate", "verify", "run"}


def test_the_lock_python_api_runs_nothing_a_crafted_lock_names(tmp_path):
    """accel.load(..., lock=...) from Python: a LockError, and the module the lock names not run."""
    user = tmp_path / "user"
    user.mkdir()
    (user / "pipe.py").write_text(LINEAR)
    crafted(marker_module)(user)
    code = (
        "import sys, accel\nfrom accel.core.errors import LockError\nsys.path.insert(0, sys.argv[1])\n"
        "try:\n    m = accel.load(sys.argv[1] + '/pipe.py', lock=sys.argv[1] + '/out')\n    m.model(*m.inputs)\n"
        "except LockError as exc:\n    print('LockError', exc.message)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(user)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "LockError" in done.stdout and "marker_mod:Out" in done.stdout
    assert not (user / "MARKER").exists()
