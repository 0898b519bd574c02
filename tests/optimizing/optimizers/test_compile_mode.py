"""`compile` with `mode: max-autotune-no-cudagraphs`: the mode reaches torch.compile, inductor
compiles with its autotuning on (and cudagraphs off), the lock re-applies the same mode, and the
autotuned model agrees with the eager one; its compile is counted as the one-time setup."""

from __future__ import annotations

import pytest
import torch
import torch._inductor.compile_fx as compile_fx
from torch._inductor import config as inductor_config

import accel
from accel.core.machine import describe_machine
from accel.optimizing.optimizers import OPTIMIZERS, Context, make_config

pytestmark = pytest.mark.slow

MODE = "max-autotune-no-cudagraphs"


@pytest.fixture
def seen(monkeypatch):
    """The mode each torch.compile call got, and inductor's autotune flags at each graph it compiles."""
    record: dict[str, list] = {"modes": [], "inductor": []}
    compile_original, inductor_original = torch.compile, compile_fx.compile_fx

    def compile_spy(*args, **kwargs):
        record["modes"].append(kwargs.get("mode"))
        return compile_original(*args, **kwargs)

    def inductor_spy(*args, **kwargs):
        record["inductor"].append((inductor_config.max_autotune, inductor_config.triton.cudagraphs))
        return inductor_original(*args, **kwargs)

    monkeypatch.setattr(torch, "compile", compile_spy)
    monkeypatch.setattr(compile_fx, "compile_fx", inductor_spy)
    return record


def test_the_mode_reaches_torch_compile_and_inductor_autotunes(seen, tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8)).eval()
    pipeline = accel.Pipeline(model=model, inputs=torch.randn(4, 32))
    optimizer = OPTIMIZERS.get("compile")
    context = Context(machine=describe_machine("cpu"), workdir=tmp_path)
    if optimizer.applicable(pipeline, context) is not None:
        pytest.skip(optimizer.applicable(pipeline, context))
    torch._dynamo.reset()  # a graph compiled earlier in this process must not be reused
    config = make_config(optimizer, {"mode": MODE})
    applied = optimizer.apply(pipeline, config, context)
    assert seen["modes"] == [MODE] and applied.state["mode"] == MODE
    # compile_fx applies the mode's config patches and calls itself under them: autotuning on, no cudagraphs
    assert seen["inductor"][-1] == (True, False)
    assert inductor_config.max_autotune is False  # scoped to the compile
    assert applied.setup_seconds > 0 and applied.notes["compile_seconds"] >= 0
    inputs = torch.randn(4, 32)
    with torch.inference_mode():
        assert torch.allclose(applied.pipeline.model(inputs), model(inputs), atol=1e-5)
    optimizer.restore(pipeline, config, applied.state, tmp_path)
    assert seen["modes"] == [MODE, MODE]
