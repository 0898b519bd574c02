"""transformers' generation advice and ONNX Runtime's graph warnings stay off the terminal while
accel's own commands run (core.profiler_notes.quiet_libraries), and come back after. Each case runs
in a child process, whose real stderr (C++ logging included) is read; the same code run without the
wrapper prints the warning, so the test fails if the wrapper stops working."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# An ONNX graph with an initializer no node uses: ONNX Runtime warns that it removes it.
ORT_SESSION = """
import onnx, onnxruntime
from onnx import TensorProto, helper
graph = helper.make_graph(
    [helper.make_node("Identity", ["x"], ["y"])], "g",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    initializer=[helper.make_tensor("unused", TensorProto.FLOAT, [1], [1.0])],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
"""

# A tiny GPT-2 at random init asked to generate with no attention mask and no pad token id (transformers
# also warns that its default bos/eos ids lie outside the tiny vocabulary).
GENERATE = """
import torch, transformers
config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=50, n_positions=32)
model = transformers.GPT2LMHeadModel(config).eval()
model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=2, do_sample=False)
"""


def _stderr(body: str, quiet: bool) -> str:
    code = body
    if quiet:
        code = "from accel.core.profiler_notes import quiet_libraries\nwith quiet_libraries():\n" + textwrap.indent(
            body, "    "
        )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_onnx_runtime_warnings_are_quiet_inside_and_back_after():
    assert "Removing initializer 'unused'" in _stderr(ORT_SESSION, quiet=False)
    assert "Removing initializer" not in _stderr(ORT_SESSION, quiet=True)
    after = "from accel.core.profiler_notes import quiet_libraries\nwith quiet_libraries():\n    pass\n" + ORT_SESSION
    assert "Removing initializer 'unused'" in _stderr(after, quiet=False)


@pytest.mark.slow
def test_transformers_generation_warnings_are_quiet_inside_accel():
    pytest.importorskip("transformers")
    loud = _stderr(GENERATE, quiet=False)
    assert "[transformers]" in loud or "attention mask" in loud or "pad_token_id" in loud, loud
    quiet = _stderr(GENERATE, quiet=True)
    assert "transformers" not in quiet and "attention mask" not in quiet and "pad_token_id" not in quiet, quiet
