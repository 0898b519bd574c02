"""`runtime.spinning`: the ONNX Runtime session kept is built again with its threads spinning between
ops (ORT's own report of the session checked), outputs unchanged; not applicable where no ORT pool
runs the model; the lock rebuilds the restored session spinning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import accel
from accel.core.errors import LockError
from accel.core.machine import describe_machine
from accel.optimizing.optimizers import OPTIMIZERS, Context, NotApplicable, make_config
from tests.optimizing.optimizers.sessions import optimized_session, rebuilt_bert

pytest.importorskip("onnxruntime")

PLANTED = Path(__file__).resolve().parents[2] / "planted"
REAL = Path(__file__).resolve().parents[2] / "real"
SPIN = "session.intra_op.allow_spinning"


def context(tmp_path) -> Context:
    return Context(machine=describe_machine("cpu"), workdir=tmp_path)


def _spins(model) -> str:
    """What ONNX Runtime itself reports of the session's intra-op spinning ("1" or "0")."""
    session = model.step.session if hasattr(model, "step") else model.session
    return session.get_session_options().get_session_config_entry(SPIN)


def _session(pipeline: accel.Pipeline, tmp_path: Path, threads: int = 2) -> accel.Pipeline:
    exporter = OPTIMIZERS.get("onnx.runtime")
    return exporter.apply(pipeline, make_config(exporter, {"threads": threads}), context(tmp_path)).pipeline


@pytest.fixture
def mlp() -> accel.Pipeline:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    return accel.Pipeline(model=model, source=[torch.randn(16) for _ in range(6)], batch_size=2)


def test_the_session_is_built_again_spinning_with_the_same_outputs(mlp, tmp_path):
    optimizer = OPTIMIZERS.get("runtime.spinning")
    session = _session(mlp, tmp_path)
    assert _spins(session.model) == "0"  # accel's sessions leave the cores to whatever runs next
    assert optimizer.applicable(session, context(tmp_path)) is None
    applied = optimizer.apply(session, make_config(optimizer, {}), context(tmp_path))
    spun = applied.pipeline.model
    assert spun is not session.model and _spins(spun) == "1" and _spins(session.model) == "0"
    assert applied.state == {"spinning": True}
    assert all(torch.equal(a, b) for a, b in zip(applied.pipeline.run(), session.run()))
    assert "spin already" in optimizer.applicable(applied.pipeline, context(tmp_path))
    # runtime.threads' rebuild keeps the spinning, and this rebuild keeps the thread count
    assert _spins(spun.rethreaded(1)) == "1" and spun.session.get_session_options().intra_op_num_threads == 2
    restored = optimizer.restore(session, make_config(optimizer, {}), applied.state, tmp_path)
    assert _spins(restored.model) == "1"
    with pytest.raises(LockError, match="not true"):
        optimizer.restore(session, make_config(optimizer, {}), {"spinning": "yes"}, tmp_path)
    with pytest.raises(LockError, match="follows no ONNX Runtime model"):
        optimizer.restore(mlp, make_config(optimizer, {}), applied.state, tmp_path)


def test_not_applicable_without_an_ort_pool_to_spin(mlp, tmp_path):
    optimizer = OPTIMIZERS.get("runtime.spinning")
    assert "does not run in an ONNX Runtime session" in optimizer.applicable(mlp, context(tmp_path))
    one = _session(mlp, tmp_path, threads=1)
    assert "one intra-op thread" in optimizer.applicable(one, context(tmp_path))
    with pytest.raises(NotApplicable, match="does not run in an ONNX Runtime session"):
        optimizer.apply(mlp, make_config(optimizer, {}), context(tmp_path))


def test_a_keyword_called_transformers_model_keeps_its_call_and_output_when_rebuilt(tmp_path):
    """The corpus's padded BERT (dict batches by keyword, a ModelOutput back), spinning: same output."""
    session, rebuilt, expected, got = rebuilt_bert(tmp_path, "runtime.spinning", {})
    assert _spins(rebuilt) == "1" and _spins(session) == "0"
    assert type(got) is type(expected) and torch.equal(got.last_hidden_state, expected.last_hidden_state)


@pytest.mark.slow
def test_optimize_tries_it_on_the_session_kept_and_the_lock_rebuilds_it_so(tmp_path):
    lock, loaded, plain = optimized_session(tmp_path, "runtime.spinning")
    assert [e.optimizer for e in lock.entries] == ["onnx.runtime", "runtime.spinning"], lock.entries
    assert _spins(loaded.model) == "1"
    assert torch.allclose(loaded.forward(loaded.example_batch()), plain.forward(loaded.example_batch()))
