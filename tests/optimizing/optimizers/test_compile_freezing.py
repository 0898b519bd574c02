"""`compile` with inductor's freezing: the flag is on while inductor compiles the model (and only
then: the process's setting is left as it was), and the frozen model agrees with the eager one."""

from __future__ import annotations

import pytest
import torch
import torch._inductor.compile_fx as compile_fx
from torch._inductor import config as inductor_config

import accel
from accel.core.errors import AccelError
from accel.core.machine import describe_machine
from accel.optimizing.optimizers import OPTIMIZERS, Context, make_config

pytestmark = pytest.mark.slow


@pytest.fixture
def freezing_seen(monkeypatch):
    """inductor's freezing flag and grad mode at each graph inductor compiles."""
    seen: list[tuple[bool, bool]] = []
    original = compile_fx.compile_fx

    def spy(*args, **kwargs):
        seen.append((inductor_config.freezing, torch.is_grad_enabled()))
        return original(*args, **kwargs)

    monkeypatch.setattr(compile_fx, "compile_fx", spy)
    return seen


def test_freezing_is_on_while_compiling_and_outputs_agree(freezing_seen, tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 8)).eval()
    pipeline = accel.Pipeline(model=model, inputs=torch.randn(4, 32))
    optimizer = OPTIMIZERS.get("compile")
    context = Context(machine=describe_machine("cpu"), workdir=tmp_path)
    if optimizer.applicable(pipeline, context) is not None:
        pytest.skip(optimizer.applicable(pipeline, context))
    applied = optimizer.apply(pipeline, make_config(optimizer, {"freezing": True}), context)
    assert applied.state["freezing"] is True and freezing_seen == [(True, False)]
    assert inductor_config.freezing is False  # scoped to the compiled model's calls
    other = torch.randn(7, 32)  # a new shape recompiles, frozen too
    with torch.inference_mode():
        assert torch.allclose(applied.pipeline.model(other), model(other), atol=1e-5)
    assert freezing_seen[-1] == (True, False) and inductor_config.freezing is False
    assert isinstance(applied.pipeline.model, torch._dynamo.eval_frame.OptimizedModule)


def test_freezing_needs_inductor_and_modes_are_checked():
    optimizer = OPTIMIZERS.get("compile")
    with pytest.raises(AccelError, match="freezing is inductor's"):
        make_config(optimizer, {"freezing": True, "backend": "eager"})
    with pytest.raises(AccelError, match="mode must be one of"):
        make_config(optimizer, {"mode": "max-autotune"})
    assert make_config(optimizer, {"mode": "max-autotune-no-cudagraphs"}).mode == "max-autotune-no-cudagraphs"
