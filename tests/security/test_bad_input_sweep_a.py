"""The bad-input sweep, part A: the pipeline file itself, recipe files and the flags of `accel
profile`, `optimize`, `calibrate`, `cache`, `recipes`, `demo` and `examples`, each kind through the
real console script and checked by tests/security/sweep.py's check_kind (one `error:` line naming
the problem and the fix, exit 2, no traceback, no process left, the user's folder unchanged, nothing
in $TMPDIR). Most kinds fail before the model runs, so the file stays a few minutes of test time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.security.sweep import LINEAR, Kind, check_kind

P = "{user}/pipe.py"
PROFILE = ("profile", P, "--budget", "1", "--no-trace")
OPTIMIZE = ("optimize", P, "--budget", "5")
R = ("optimize", P, "--recipe", "{user}/r.yaml")
RULES = "rules: [{name: a, try: [onnx.runtime]}]\n"


def pipeline(**fields: str) -> str:
    """A pipe.py defining an accel.Pipeline over a Linear(4, 2), with `fields` (source text) added."""
    extra = "".join(f", {name}={value}" for name, value in fields.items())
    return (
        "import accel, torch\n"
        "pipeline = accel.Pipeline(model=torch.nn.Linear(4, 2), "
        f"source=[torch.ones(4) for _ in range(8)]{extra})\n"
    )


def recipe(text: str) -> dict[str, str | bytes]:
    return {"pipe.py": LINEAR, "r.yaml": text}


def fifo(name: str):
    return lambda user: os.mkfifo(user / name)


def folder(name: str):
    return lambda user: (user / name).mkdir()


NAMESPACE = "0123456789abcdef-01234567"  # the store's own names: code digest, version digest


def cache_with_meta(meta: str):
    """A decoded-sample cache (user/cache) with one namespace of one record, its meta.json `meta`."""

    def setup(user: Path) -> None:
        shard = user / "cache" / NAMESPACE / "ab"
        shard.mkdir(parents=True)
        (shard.parent / "meta.json").write_text(meta)
        (shard / ("a" * 64 + ".rec")).write_bytes(os.urandom(64))

    return setup


# A YAML bomb: nine levels of nine aliases, 9**9 strings if anything walks it as a tree.
YAML_BOMB = (
    "a: &a [x,x,x,x,x,x,x,x,x]\n"
    + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
    + "rules: *i\n"
)
TEN_MB_RECIPE = "name: big\n" + "# " + "x" * 78 + "\n" * 1 + ("# " + "x" * 78 + "\n") * 130_000 + RULES

KINDS = {
    # ---- the pipeline file itself
    "pipe_syntax_error_optimize": Kind(OPTIMIZE, ("syntax error in",), {"pipe.py": "model = (\n"}),
    "pipe_import_error_optimize": Kind(OPTIMIZE, ("failed to import",), {"pipe.py": "import not_a_module_xyz\n"}),
    "pipe_module_level_exception": Kind(
        PROFILE, ("RuntimeError", "boom"), {"pipe.py": "import torch\nraise RuntimeError('boom')\n"}
    ),
    "pipe_model_not_a_module": Kind(
        PROFILE, ("model",), {"pipe.py": "import torch\nmodel = 42\nexample_inputs = (torch.ones(2, 4),)\n"}
    ),
    "pipe_example_inputs_a_string": Kind(
        PROFILE, ("example_inputs",), {"pipe.py": "import torch\nmodel = torch.nn.Linear(4, 2)\nexample_inputs = 'x'\n"}
    ),
    "pipe_example_inputs_shape_mismatch": Kind(
        PROFILE,
        ("mat1 and mat2",),
        {"pipe.py": "import torch\nmodel = torch.nn.Linear(4, 2)\nexample_inputs = (torch.ones(2, 3),)\n"},
    ),
    "pipeline_batch_size_zero": Kind(PROFILE, ("batch_size",), {"pipe.py": pipeline(batch_size="0")}),
    "pipeline_batch_size_negative": Kind(PROFILE, ("batch_size",), {"pipe.py": pipeline(batch_size="-4")}),
    "pipeline_num_workers_negative": Kind(PROFILE, ("num_workers",), {"pipe.py": pipeline(num_workers="-1")}),
    "pipeline_num_workers_a_string": Kind(PROFILE, ("num_workers",), {"pipe.py": pipeline(num_workers="'two'")}),
    "pipeline_source_empty": Kind(
        PROFILE,
        ("source",),
        {"pipe.py": "import accel, torch\npipeline = accel.Pipeline(model=torch.nn.Linear(4, 2), source=[])\n"},
    ),
    "pipeline_source_raises": Kind(
        PROFILE,
        ("source", "disk gone"),
        {
            "pipe.py": "import accel, torch\nclass S:\n    def __iter__(self):\n        raise OSError('disk gone')\n"
            "    def __len__(self):\n        return 8\n"
            "pipeline = accel.Pipeline(model=torch.nn.Linear(4, 2), source=S())\n"
        },
    ),
    "pipeline_decode_returns_a_string": Kind(  # the batch reaches the model: its TypeError is the line
        PROFILE,
        ("model stage raised TypeError", "must be Tensor"),
        {
            "pipe.py": "import accel, torch\npipeline = accel.Pipeline(model=torch.nn.Linear(4, 2), "
            "source=list(range(8)), decode=lambda i: 'text', batch_size=4)\n"
        },
    ),
    "script_sys_exit_optimize": Kind(OPTIMIZE, ("exited with status 3",), {"pipe.py": "import sys\nsys.exit(3)\n"}),
    "script_os_exit_optimize": Kind(OPTIMIZE, ("os._exit(0)",), {"pipe.py": "import os\nos._exit(0)\n"}),
    "pipe_is_a_folder": Kind(PROFILE, ("pipe.py",), {}, setup=folder("pipe.py")),
    "pipe_is_binary": Kind(PROFILE, ("pipe.py",), {"pipe.py": b"\x7fELF\x02\x01\x01\x00\x00\x00" * 50}),
    "pipe_not_utf8": Kind(
        PROFILE, ("pipe.py", "'utf-8' codec"), {"pipe.py": b"import torch\nname = 'caf\xe9'\n" + LINEAR.encode()}
    ),
    "pipe_is_a_fifo": Kind(PROFILE, ("pipe.py",), {}, setup=fifo("pipe.py")),
    "pipe_links_to_dev_zero": Kind(PROFILE, ("pipe.py",), {}, setup=lambda u: (u / "pipe.py").symlink_to("/dev/zero")),
    "pipe_path_with_spaces_and_unicode": Kind(
        ("profile", "{user}/my models/pïpe é.py", "--budget", "1", "--no-trace"),
        ("pïpe é.py", "syntax error"),
        {"my models/pïpe é.py": "model = (\n"},
    ),
    "pipe_onnx_garbage": Kind(
        ("profile", "{user}/m.onnx", "--budget", "1", "--no-trace"), ("m.onnx",), {"m.onnx": b"not onnx"}
    ),
    # ---- recipe files
    "recipe_empty": Kind(R, ("r.yaml",), recipe("")),
    "recipe_a_scalar": Kind(R, ("r.yaml",), recipe("just words\n")),
    "recipe_yaml_syntax_error": Kind(R, ("r.yaml",), recipe("name: [unclosed\n")),
    "recipe_unknown_top_key": Kind(R, ("unknown key 'speed'",), recipe("name: r\nspeed: max\n" + RULES)),
    "recipe_unknown_optimizer": Kind(R, ("no.such",), recipe("name: r\nrules: [{name: a, try: [no.such]}]\n")),
    "recipe_unknown_target": Kind(R, ("target",), recipe("name: r\ntarget: fastest\n" + RULES)),
    "recipe_rules_not_a_list": Kind(R, ("rules",), recipe("name: r\nrules: 5\n")),
    "recipe_guard_negative": Kind(
        R, ("max_relative_error",), recipe("name: r\nguard: {max_relative_error: -1}\n" + RULES)
    ),
    "recipe_guard_above_one": Kind(R, ("min_cosine",), recipe("name: r\nguard: {min_cosine: 2}\n" + RULES)),
    "recipe_guard_a_string": Kind(R, ("min_cosine",), recipe("name: r\nguard: {min_cosine: high}\n" + RULES)),
    "recipe_guard_nan": Kind(R, ("min_cosine",), recipe("name: r\nguard: {min_cosine: .nan}\n" + RULES)),
    "recipe_budget_negative": Kind(R, ("budget_seconds",), recipe("name: r\nbudget_seconds: -5\n" + RULES)),
    "recipe_budget_zero": Kind(R, ("budget_seconds",), recipe("name: r\nbudget_seconds: 0\n" + RULES)),
    "recipe_budget_nan": Kind(R, ("budget_seconds",), recipe("name: r\nbudget_seconds: .nan\n" + RULES)),
    "recipe_budget_infinite": Kind(R, ("budget_seconds",), recipe("name: r\nbudget_seconds: .inf\n" + RULES)),
    "recipe_budget_huge": Kind(R, ("budget_seconds",), recipe("name: r\nbudget_seconds: 1.0e+12\n" + RULES)),
    "recipe_budget_a_string": Kind(R, ("budget_seconds",), recipe("name: r\nbudget_seconds: soon\n" + RULES)),
    "recipe_yaml_bomb": Kind(R, ("r.yaml",), recipe(YAML_BOMB)),
    "recipe_ten_megabytes": Kind(R, ("r.yaml",), recipe(TEN_MB_RECIPE)),
    "recipe_is_a_folder": Kind(R, ("r.yaml",), {"pipe.py": LINEAR}, setup=folder("r.yaml")),
    "recipe_is_a_fifo": Kind(R, ("r.yaml",), {"pipe.py": LINEAR}, setup=fifo("r.yaml")),
    "recipe_python_tag": Kind(
        R, ("r.yaml",), recipe("name: !!python/object/apply:os.system ['touch {user}/ran']\n" + RULES)
    ),
    "recipe_missing_file": Kind(("optimize", P, "--recipe", "{user}/none.yaml"), ("none.yaml",)),
    "recipe_name_empty": Kind(("optimize", P, "--recipe", ""), ("recipe",)),
    # ---- flags
    "optimize_budget_negative": Kind(("optimize", P, "--budget", "-1"), ("--budget",)),
    "optimize_budget_nan": Kind(("optimize", P, "--budget", "nan"), ("--budget",)),
    "optimize_budget_inf": Kind(("optimize", P, "--budget", "inf"), ("--budget",)),
    "optimize_budget_not_a_number": Kind(("optimize", P, "--budget", "abc"), ("--budget",)),
    "profile_budget_inf": Kind(("profile", P, "--budget", "inf", "--no-trace"), ("--budget",)),
    "optimize_only_unknown": Kind(("optimize", P, "--only", "no.such"), ("no.such",)),
    "optimize_skip_unknown": Kind(("optimize", P, "--skip", "no.such"), ("no.such",)),
    "optimize_threads_zero": Kind(("optimize", P, "--threads", "0"), ("--threads",)),
    "json_is_a_fifo": Kind((*PROFILE, "--json", "{user}/out.json"), ("--json",), setup=fifo("out.json")),
    "json_in_a_read_only_folder": Kind(
        (*PROFILE, "--json", "{user}/ro/r.json"), ("--json",), setup=folder("ro"), read_only=("ro",)
    ),
    "html_in_a_read_only_folder": Kind(
        (*PROFILE, "--html", "{user}/ro/r.html"), ("--html",), setup=folder("ro"), read_only=("ro",)
    ),
    "trace_dir_in_a_read_only_folder": Kind(
        ("profile", P, "--budget", "1", "--trace-dir", "{user}/ro/t"),
        ("--trace-dir",),
        setup=folder("ro"),
        read_only=("ro",),
    ),
    "out_in_a_read_only_folder": Kind(
        (*OPTIMIZE, "--out", "{user}/ro/o"), ("--out",), setup=folder("ro"), read_only=("ro",)
    ),
    "out_is_a_file": Kind((*OPTIMIZE, "--out", P), ("--out",)),
    "optimize_json_is_a_folder": Kind((*OPTIMIZE, "--json", "{user}/f"), ("--json",), setup=folder("f")),
    "json_stdout_with_a_broken_pipeline": Kind(
        ("profile", P, "--budget", "1", "--no-trace", "--json", "-"), ("syntax error",), {"pipe.py": "model = (\n"}
    ),
    "narrow_terminal_bad_flag": Kind(("profile", P, "--budget", "abc"), ("--budget",), env={"COLUMNS": "20"}),
    "narrow_terminal_bad_pipeline": Kind(PROFILE, ("syntax error",), {"pipe.py": "model = (\n"}, env={"COLUMNS": "20"}),
    "profile_no_file": Kind(("profile", "--budget", "1"), ("no FILE",)),
    "profile_traces_and_file": Kind(("profile", P, "--traces", "{user}"), ("--traces",)),
    "profile_traces_garbage": Kind(("profile", "--traces", "{user}/t"), ("t",), {"t/rank0.pt.trace.json": "{not json"}),
    # ---- calibrate
    "calibrate_cache_dir_read_only": Kind(
        ("calibrate", "--quick"),
        ("calibration cache",),
        {},
        setup=folder("ro"),
        read_only=("ro",),
        env={"ACCEL_CACHE_DIR": "{user}/ro/c"},
    ),
    "calibrate_cache_dir_is_a_file": Kind(
        ("calibrate", "--quick"), ("calibration cache",), env={"ACCEL_CACHE_DIR": "{user}/pipe.py"}
    ),
    "calibrate_xdg_cache_under_a_file": Kind(
        ("calibrate", "--quick"),
        ("calibration cache",),
        env={"ACCEL_CACHE_DIR": "", "XDG_CACHE_HOME": "{user}/pipe.py/x"},
    ),
    "calibrate_unknown_device": Kind(("calibrate", "--device", "tpu"), ("tpu",)),
    "calibrate_absent_cuda_device": Kind(("calibrate", "--device", "cuda:7"), ("cuda:7",)),
    "profile_calibration_cache_read_only": Kind(
        PROFILE, ("calibration cache",), setup=folder("ro"), read_only=("ro",), env={"ACCEL_CACHE_DIR": "{user}/ro/c"}
    ),
    # ---- cache
    "cache_info_dir_is_a_file": Kind(("cache", "info", "--dir", P), ("pipe.py",)),
    "cache_clear_dir_is_a_file": Kind(("cache", "clear", "--dir", P), ("pipe.py",)),
    "cache_clear_namespace_escapes": Kind(
        ("cache", "clear", "--dir", "{user}/cache", "--namespace", "../victim"),
        ("namespace",),
        {"victim/0.npy": b"user data", "pipe.py": LINEAR},
        setup=folder("cache"),
    ),
    "cache_info_meta_a_list": Kind(
        ("cache", "info", "--dir", "{user}/cache"),
        ("corrupt meta.json", "accel cache clear"),
        setup=cache_with_meta("[1]"),
    ),
    "cache_info_meta_wrong_types": Kind(
        ("cache", "info", "--dir", "{user}/cache"), ("corrupt meta.json",), setup=cache_with_meta('{"stages": 5}')
    ),
    "cache_clear_read_only": Kind(
        ("cache", "clear", "--dir", "{user}/cache"),
        ("cannot remove cached records",),
        setup=cache_with_meta('{"stages": ["decode"]}'),
        read_only=(f"cache/{NAMESPACE}/ab",),
    ),
    "unknown_option_with_markup": Kind(("profile", P, "--[/x]"), ("--[/x]",)),
    # ---- recipes, demo, examples
    "recipes_extra_argument": Kind(("recipes", "latency"), ("latency",)),
    "examples_into_a_file": Kind(("examples", P), ("pipe.py",)),
    "examples_into_a_read_only_folder": Kind(
        ("examples", "{user}/ro/ex"), ("ro",), setup=folder("ro"), read_only=("ro",)
    ),
    "examples_over_edited_examples": Kind(
        ("examples", "{user}/ex"), ("image_pipeline.py",), {"ex/image_pipeline.py": "# mine\n"}
    ),
    "examples_under_a_file": Kind(("examples", "{user}/pipe.py/ex"), ("pipe.py",)),
    "demo_read_only_cwd": Kind(
        ("demo", "--budget", "1"), ("accel-runs",), setup=folder("ro"), read_only=("ro",), cwd="{user}/ro"
    ),
    "demo_budget_zero": Kind(("demo", "--budget", "0"), ("--budget",)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(KINDS))
def test_each_kind_is_one_line_exit_2_and_leaves_nothing(tmp_path, name):
    check_kind(tmp_path, KINDS[name])


def test_part_a_covers_its_commands():
    commands = {kind.args[0] for kind in KINDS.values()}
    assert commands >= {"profile", "optimize", "calibrate", "cache", "recipes", "demo", "examples"}
    assert len(KINDS) >= 45
