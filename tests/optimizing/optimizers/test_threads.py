"""`runtime.threads`: the model call runs at the chosen intra-op thread count, the process's count is
put back after, and the lock re-applies the count it measured."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import accel
from accel.core.errors import AccelError, LockError
from accel.core.machine import describe_machine
from accel.optimizing.lock import Lock, LockEntry, apply_lock, file_sha256, write_lock
from accel.optimizing.optimizers import OPTIMIZERS, Context, make_config
from accel.optimizing.optimizers.runtime_threads import ThreadCount, session_threads
from tests.optimizing.optimizers.sessions import optimized_session, rebuilt_bert

PLANTED = Path(__file__).resolve().parents[2] / "planted"
REAL = Path(__file__).resolve().parents[2] / "real"

# The count the process runs at in these tests: above the candidates (1 and half of it).
PROCESS_THREADS = 4


class ThreadsSeen(torch.nn.Module):
    """Records torch's intra-op thread count inside each forward."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(8, 4)
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.get_num_threads())
        return self.linear(x)


@pytest.fixture
def pipeline() -> accel.Pipeline:
    torch.set_num_threads(PROCESS_THREADS)  # the autouse fixture puts the count back
    torch.manual_seed(0)
    return accel.Pipeline(model=ThreadsSeen().eval(), source=[torch.randn(8) for _ in range(6)], batch_size=2)


def context(tmp_path) -> Context:
    return Context(machine=describe_machine("cpu"), workdir=tmp_path)


@pytest.mark.parametrize("params, expected", [({"threads": 1}, 1), ({}, PROCESS_THREADS // 2)])
def test_the_call_runs_at_the_count_and_the_count_is_restored_after(pipeline, tmp_path, params, expected):
    optimizer = OPTIMIZERS.get("runtime.threads")
    assert optimizer.applicable(pipeline, context(tmp_path)) is None
    applied = optimizer.apply(pipeline, make_config(optimizer, params), context(tmp_path))
    assert applied.state == {"threads": expected, "threads_before": PROCESS_THREADS}
    assert pipeline.forward_wrapper is None  # the input pipeline is not changed
    results = applied.pipeline.run()
    assert pipeline.model.seen == [expected] * 3 and torch.get_num_threads() == PROCESS_THREADS
    assert all(torch.equal(a, b) for a, b in zip(results, pipeline.run()))


def test_the_count_is_restored_when_the_call_raises(pipeline, tmp_path):
    def broken(batch):
        raise RuntimeError("model failed")

    optimizer = OPTIMIZERS.get("runtime.threads")
    applied = optimizer.apply(pipeline.replace(model=broken), make_config(optimizer, {"threads": 1}), context(tmp_path))
    with pytest.raises(RuntimeError, match="model failed"):
        applied.pipeline.forward(torch.randn(2, 8))
    assert torch.get_num_threads() == PROCESS_THREADS


def test_a_forward_wrapper_already_there_runs_inside_and_is_reset_through_it(pipeline, tmp_path):
    class Counting:
        calls = resets = 0

        def __call__(self, batch, forward):
            self.calls += 1
            return forward(batch)

        def reset_state(self):
            self.resets += 1

    inner = Counting()
    optimizer = OPTIMIZERS.get("runtime.threads")
    applied = optimizer.apply(
        pipeline.replace(forward_wrapper=inner), make_config(optimizer, {"threads": 1}), context(tmp_path)
    )
    applied.pipeline.run()
    applied.pipeline.forward_wrapper.reset_state()
    assert inner.calls == 3 and inner.resets == 1 and pipeline.model.seen == [1, 1, 1]


def test_not_applicable_where_torch_threads_do_not_reach_the_model(pipeline, tmp_path):
    optimizer = OPTIMIZERS.get("runtime.threads")
    session_like = torch.nn.Module()  # no torch weights: another runtime's session
    session_like.forward = lambda x: x
    assert "no torch weights" in optimizer.applicable(pipeline.replace(model=session_like), context(tmp_path))
    torch.set_num_threads(1)
    assert "one intra-op thread already" in optimizer.applicable(pipeline, context(tmp_path))
    wrapped = pipeline.replace(forward_wrapper=ThreadCount(2))
    torch.set_num_threads(PROCESS_THREADS)
    assert "already runs at 2 thread" in optimizer.applicable(wrapped, context(tmp_path))


def test_a_count_that_is_not_fewer_is_refused(pipeline, tmp_path):
    optimizer = OPTIMIZERS.get("runtime.threads")
    with pytest.raises(AccelError, match="is not fewer"):
        optimizer.apply(pipeline, make_config(optimizer, {"threads": PROCESS_THREADS}), context(tmp_path))
    with pytest.raises(AccelError, match="threads must be an int"):
        make_config(optimizer, {"threads": 0})


def test_the_lock_restores_the_measured_count(pipeline, tmp_path):
    optimizer = OPTIMIZERS.get("runtime.threads")
    applied = optimizer.apply(pipeline, make_config(optimizer, {}), context(tmp_path))
    file = tmp_path / "pipeline.py"
    file.write_text("# the pipeline file the lock is for\n")
    entry = LockEntry("runtime.threads", {}, applied.state)
    write_lock(tmp_path, Lock(pipeline_file=file.name, pipeline_sha256=file_sha256(file), entries=(entry,)))
    torch.set_num_threads(3)  # another process, another count: the lock keeps the measured one
    restored = apply_lock(pipeline, tmp_path, file)
    restored.forward(torch.randn(2, 8))
    assert pipeline.model.seen == [PROCESS_THREADS // 2] and torch.get_num_threads() == 3
    bad = LockEntry("runtime.threads", {}, {"threads": "all"})
    write_lock(tmp_path, Lock(pipeline_file=file.name, pipeline_sha256=file_sha256(file), entries=(bad,)))
    with pytest.raises(LockError, match="not an int"):
        apply_lock(pipeline, tmp_path, file)


def _runtime_threads(model) -> int:
    """The thread count the graph runtime itself reports for the model's session."""
    if hasattr(model, "session"):
        return model.session.get_session_options().intra_op_num_threads
    return int(model.compiled.get_property("INFERENCE_NUM_THREADS"))


@pytest.mark.parametrize("runtime", ["onnx.runtime", "openvino.runtime"])
def test_a_graph_runtime_model_is_built_again_at_the_count(pipeline, tmp_path, runtime):
    pytest.importorskip(runtime.split(".")[0].replace("onnx", "onnxruntime"))
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: no thread count below the session's")
    exporter, optimizer = OPTIMIZERS.get(runtime), OPTIMIZERS.get("runtime.threads")
    session = exporter.apply(pipeline, make_config(exporter, {}), context(tmp_path)).pipeline
    # (OpenVINO runs at most one thread per physical core, whatever it is asked for.)
    assert session_threads(session.model) == PROCESS_THREADS and _runtime_threads(session.model) > 1
    assert optimizer.applicable(session, context(tmp_path)) is None
    applied = optimizer.apply(session, make_config(optimizer, {"threads": 1}), context(tmp_path))
    assert applied.state == {"threads": 1, "threads_before": PROCESS_THREADS}
    rebuilt = applied.pipeline.model
    assert rebuilt is not session.model and _runtime_threads(rebuilt) == 1
    assert _runtime_threads(session.model) > 1  # the pipeline it was given is not changed
    assert applied.pipeline.forward_wrapper is None  # torch's count is not what runs the session
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(applied.pipeline.run(), session.run()))
    assert "runs on one thread already" in optimizer.applicable(applied.pipeline, context(tmp_path))
    # The lock's state re-applied on the session the model slot's entry restores: built again at 1.
    restored = optimizer.restore(session, make_config(optimizer, {}), applied.state, tmp_path)
    assert _runtime_threads(restored.model) == 1 and restored.forward_wrapper is None


@pytest.mark.slow
def test_optimize_keeps_a_session_at_one_thread_and_the_lock_rebuilds_it_so(tmp_path):
    pytest.importorskip("onnxruntime")
    lock, loaded, _ = optimized_session(tmp_path, {"optimizer": "runtime.threads", "params": {"threads": 1}})
    assert [e.optimizer for e in lock.entries] == ["onnx.runtime", "runtime.threads"], lock.entries
    assert lock.entries[1].state == {"threads": 1, "threads_before": 2}
    assert _runtime_threads(loaded.model) == 1 and loaded.forward_wrapper is None


def test_a_keyword_called_transformers_model_keeps_its_call_and_output_when_rebuilt(tmp_path):
    """The corpus's padded BERT (dict batches called by keyword, a ModelOutput back) in ONNX Runtime,
    rebuilt at one thread: same call, same output class and values."""
    pytest.importorskip("onnxruntime")
    session, rebuilt, expected, got = rebuilt_bert(tmp_path, "runtime.threads", {"threads": 1})
    assert _runtime_threads(rebuilt) == 1 and _runtime_threads(session) == 2
    assert type(got) is type(expected) and torch.equal(got.last_hidden_state, expected.last_hidden_state)
