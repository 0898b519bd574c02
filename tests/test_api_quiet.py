"""The Python API keeps the libraries' routine noise off a user's terminal, as the CLI does:
`accel.load`, `accel.profile` and `accel.optimize` run inside core.profiler_notes.quiet_libraries.

A child process (its real stderr read, C++ logging included) calls each on real inputs that make the
libraries talk: a pipeline file building a tiny transformers GPT-2 from a config whose default bos/eos
ids lie outside its vocabulary (transformers' "[transformers] Model config" advice, at load) and an
ONNX model with an initializer no node uses (ONNX Runtime's "Removing initializer" graph warning,
at session creation). The same child calling the unwrapped functions (`__wrapped__`, the API without
the wrap) prints the noise, so the test fails if a wrap is dropped."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = '''
import sys
from pathlib import Path

import onnx
from onnx import TensorProto, helper

import accel
import accel.optimizing.lock

here, mode = Path(sys.argv[1]), sys.argv[2]
PIPE = """
import torch, transformers
import accel
config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=VOCAB, n_positions=32)
model = transformers.GPT2LMHeadModel(config).eval()
pipeline = accel.Pipeline(model=model, inputs=(torch.tensor([[1, 2, 3]]),), name="tiny_gpt2")
"""
# Two files: a file loaded once is not imported again, and transformers says each advice once per process.
(here / "gpt2_pipe.py").write_text(PIPE.replace("VOCAB", "50"))
(here / "gpt2_pipe_again.py").write_text(PIPE.replace("VOCAB", "60"))
graph = helper.make_graph(
    [helper.make_node("Relu", ["x"], ["y"])], "g",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
    initializer=[helper.make_tensor("unused", TensorProto.FLOAT, [1], [1.0])],
)
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(here / "unused.onnx"))
(here / "recipe.yaml").write_text(
    "name: one\\ntarget: latency\\norder: as_written\\nrules: [{name: r, try: [precision.bf16]}]\\n"
)
load, profile, optimize = accel.load, accel.profile, accel.optimize
if mode == "raw":  # the API without the wrap (optimize loads its target through the module's load)
    load, profile, optimize = load.__wrapped__, profile.__wrapped__, optimize.__wrapped__
    accel.optimizing.lock.load = load
for name, call in [
    ("load", lambda: load(here / "gpt2_pipe.py")),
    ("profile", lambda: profile(here / "unused.onnx", budget_seconds=1)),
    ("optimize", lambda: optimize(here / "gpt2_pipe_again.py", here / "recipe.yaml", budget_seconds=3)),
]:
    print("CALL", name, file=sys.stderr, flush=True)
    call()
    print("CALL end", file=sys.stderr, flush=True)
'''
TRANSFORMERS_NOTE = "[transformers] Model config"
ORT_NOTE = "Removing initializer 'unused'"


def _stderr_per_call(tmp_path: Path, mode: str) -> dict[str, str]:
    """What the child printed on stdout and stderr during each API call."""
    folder = tmp_path / mode
    folder.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), mode], capture_output=True, text=True, timeout=300, cwd=folder
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    parts = re.split(r"^CALL (\w+)\n", done.stderr, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


@pytest.mark.slow
def test_the_api_keeps_library_noise_off_the_terminal(tmp_path):
    pytest.importorskip("transformers")
    raw = _stderr_per_call(tmp_path, "raw")
    assert TRANSFORMERS_NOTE in raw["load"], raw
    assert ORT_NOTE in raw["profile"], raw
    assert TRANSFORMERS_NOTE in raw["optimize"], raw
    quiet = _stderr_per_call(tmp_path, "wrapped")
    assert set(quiet) == {"load", "profile", "optimize", "end"}
    for name in ("load", "profile", "optimize"):
        assert TRANSFORMERS_NOTE not in quiet[name] and "onnxruntime" not in quiet[name], (name, quiet[name])
        assert "USDT" not in quiet[name] and "profiler_start" not in quiet[name], (name, quiet[name])


def test_the_library_settings_come_back_after_an_api_call_and_nest():
    """Nested blocks (a CLI command calling the API) leave the libraries quiet until the outermost ends."""
    onnxruntime = pytest.importorskip("onnxruntime")
    from accel.core import profiler_notes

    seen = []

    @profiler_notes.quietly
    def inner() -> None:
        seen.append(profiler_notes._depth[0])

    with profiler_notes.quiet_libraries():
        inner()
        assert profiler_notes._depth[0] == 1
    assert seen == [2] and profiler_notes._depth[0] == 0
    assert inner.__wrapped__ is not None and onnxruntime is not None
