"""overhead: many tiny ops take far longer than their roofline time; long ops near it are not named."""

from __future__ import annotations

from accel.profiling.analyzers.overhead import cures_for
from accel.profiling.data import BatchPadding, ProfileData, StageTiming
from tests.profiling.analyzers.recorded import cost, fake_machine, kinds, op, profile_hardware

# What the stage pass records for a pipeline with a source of samples (a collate stage).
SOURCE_STAGES = [StageTiming("collate", 1e-4, 8), StageTiming("model", 1e-2, 8)]


def test_many_tiny_ops_are_overhead(machine):
    report = profile_hardware("tiny_ops", machine)
    assert report.primary == "overhead"
    finding = report.finding("overhead")
    assert finding.evidence["op_count_per_call"] >= 200
    assert finding.evidence["median_op_seconds"] > 4 * finding.evidence["median_op_roofline_seconds"]
    assert "onnx.runtime" in finding.recommendations


def test_tiny_ops_far_above_their_roofline_are_overhead():
    ops = [op(name="aten::add", flops=1000, bytes_moved=4000, seconds=20e-6) for _ in range(300)]
    found = kinds(ProfileData(target="t", ops=cost(*ops), stages=SOURCE_STAGES), fake_machine())
    assert found["overhead"].evidence["op_count_per_call"] == 300
    assert found["overhead"].recommendations == ["onnx.runtime", "compile", "batch.size"]
    assert "cures_left_out" not in found["overhead"].evidence
    onnx = kinds(ProfileData(target="t", mode="onnx", ops=cost(*ops)), fake_machine())
    assert onnx["overhead"].recommendations == ["batch.size"]  # already in a graph runtime


def _tiny_ops_data(**fields) -> ProfileData:
    ops = [op(name="aten::add", flops=1000, bytes_moved=4000, seconds=20e-6) for _ in range(300)]
    return ProfileData(target="t", ops=cost(*ops), **fields)


def test_overhead_recommends_only_the_cures_that_fit_the_model():
    # a model called on a fixed example batch, no source: nothing to batch
    fixed = kinds(_tiny_ops_data(), fake_machine())["overhead"]
    assert fixed.recommendations == ["onnx.runtime", "compile"]
    assert "no source" in fixed.evidence["cures_left_out"]["batch.size"]
    # a generate loop: exports cover single forward calls only; the loop runs in a graph runtime
    generating = cures_for(_tiny_ops_data(stages=SOURCE_STAGES, generation=object()))
    assert generating[0] == ["onnx.generate", "openvino.generate", "compile", "batch.size"]
    assert "generate loop" in generating[1]["onnx.runtime"]
    # a stepwise RNN's samples, one per call at several lengths: a larger batch would pad them
    ragged = [BatchPadding(n, n, (n,)) for n in (3, 9, 5)]
    rnn = kinds(_tiny_ops_data(stages=SOURCE_STAGES, padding=ragged), fake_machine())["overhead"]
    assert rnn.recommendations == ["onnx.runtime", "compile"]
    assert "3 to 9 positions" in rnn.evidence["cures_left_out"]["batch.size"]
    assert "batch.size does not fit" in rnn.summary
    # the same samples all of one length keep batch.size
    even = [BatchPadding(6, 6, (6,)) for _ in range(3)]
    assert cures_for(_tiny_ops_data(stages=SOURCE_STAGES, padding=even))[0] == ["onnx.runtime", "compile", "batch.size"]
    # a training script: no ONNX Runtime, no batch size of accel's choosing
    assert cures_for(_tiny_ops_data(mode="script"))[0] == ["compile"]


def test_a_generate_loops_overhead_predicts_the_graph_runtime_loops_save_it():
    # what ranks the loops run outside torch in the search: without it they came after every
    # torch candidate, and GPT-2's generate() spent its budget before reaching them
    looped = kinds(_tiny_ops_data(stages=SOURCE_STAGES, generation=object()), fake_machine())["overhead"]
    share = looped.evidence["overhead_share_of_model"]
    assert share > 0.5
    assert looped.evidence["predicted_saving"] == {"onnx.generate": share, "openvino.generate": share}
    # no generate loop: neither is named, nothing predicted for them
    forward = kinds(_tiny_ops_data(stages=SOURCE_STAGES), fake_machine())["overhead"]
    assert forward.evidence["predicted_saving"] == {} and "onnx.generate" not in forward.recommendations


def test_a_long_op_near_its_roofline_is_not_overhead():
    data = ProfileData(target="t", ops=cost(op(name="aten::mm", flops=2 * 10**10, bytes_moved=10**7, seconds=0.1)))
    assert "overhead" not in kinds(data, fake_machine())
