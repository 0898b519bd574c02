"""Lookups into embedding tables count the rows they gather, not the whole table (accel.core.counts)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import accel
from accel.core.counts import count_forward
from accel.profiling.data import ProfileData
from tests.planted import hw_embedding_bag as planted

PLANTED = Path(__file__).resolve().parents[1] / "planted"


def _lookup_ops(counts, name):
    return [o for o in counts.ops if o.op == name]


def test_an_embedding_bag_recommender_counts_gathered_rows_not_its_table():
    pipeline = accel.load(PLANTED / "hw_embedding_bag.py")
    model, (dense, ids) = pipeline.model, pipeline.inputs
    with torch.inference_mode():
        counts = count_forward(lambda: model(dense, ids), model)
    (bag,) = [o for o in counts.ops if "embedding_bag" in o.op]
    row_bytes = planted.DIM * 4
    gathered = ids.numel() * row_bytes
    table = planted.ROWS * row_bytes
    assert bag.weight_bytes == gathered  # the table's part of the read: the rows the ids pick
    assert gathered <= bag.bytes_read <= gathered + 2 * ids.numel() * 8 + 1024  # plus the ids and offsets
    assert counts.bytes_moved < table / 20  # the 41 MB table is not behind every call


@pytest.mark.parametrize(
    ("call", "expected_table_bytes"),
    [
        (lambda w, i: torch.nn.functional.embedding(i, w), 10 * 16 * 4),
        (lambda w, i: w.index_select(0, i), 10 * 16 * 4),
        (lambda w, i: w.gather(0, i.reshape(-1, 1).expand(-1, 16)), 10 * 16 * 4),  # elements
        (lambda w, i: w.take(i), 10 * 4),
        (lambda w, i: w.index_select(1, i % 16), 10 * 100 * 4),  # columns of 100 elements
    ],
)
def test_each_lookup_op_reads_what_its_indices_pick(call, expected_table_bytes):
    table = torch.randn(100, 16)
    index = torch.arange(10) * 7
    with torch.inference_mode():
        counts = count_forward(lambda: call(table, index))
    (lookup,) = [o for o in counts.ops if o.op.split("::")[1] in ("embedding", "index_select", "gather", "take")]
    index_bytes = index.numel() * index.element_size()
    assert expected_table_bytes <= lookup.bytes_read <= expected_table_bytes + 16 * index_bytes


def test_more_indices_than_rows_count_the_table_at_most():
    table = torch.randn(50, 8)
    index = torch.randint(0, 50, (1000,))
    with torch.inference_mode():
        counts = count_forward(lambda: torch.nn.functional.embedding(index, table))
    (lookup,) = _lookup_ops(counts, "aten::embedding")
    assert lookup.bytes_read == 50 * 8 * 4 + index.numel() * 8


def test_an_op_measured_above_the_calibrated_peak_is_marked_miscounted_not_capped():
    from tests.profiling.analyzers.recorded import cost, fake_machine, kinds, op

    machine = fake_machine(bandwidth_gbs=10.0)
    streaming = op(flops=10**6, bytes_moved=3 * 10**8, weight_bytes=3 * 10**8, seconds=0.04, machine=machine)
    # a table lookup counted as 421 MB in 30 ms: 14 GB/s against a 10 GB/s peak (issue 26)
    lookup = op(
        "aten::_embedding_bag", bytes_moved=421 * 10**6, weight_bytes=421 * 10**6, seconds=0.03, machine=machine
    )
    small = op("aten::add", flops=10**3, bytes_moved=10**4, seconds=10**-7, machine=machine)  # in cache: 100 GB/s
    found = kinds(ProfileData(target="t", ops=cost(streaming, lookup, small)), machine)["memory_bandwidth"]
    (suspect,) = found.evidence["ops_above_peak"]
    assert suspect["op"] == "aten::_embedding_bag"
    assert suspect["bandwidth_fraction"] == pytest.approx(1.403, rel=0.01)  # not capped at 1.0
    assert suspect["note"] == "above the calibrated peak: its bytes or time are miscounted"
    assert "aten::_embedding_bag measured at up to 14.0 GB/s, above the calibrated peak" in found.summary
