"""accel.core.counts: FLOPs and bytes per aten op, attributed to modules."""

from __future__ import annotations

import torch
from torch import nn

from accel.core.counts import ROOT_MODULE, Counts, count_forward, parameter_bytes


def test_linear_flops_and_weight_bytes_match_the_formulas():
    model = nn.Sequential(nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 10))
    x = torch.randn(8, 256)
    counts = count_forward(lambda: model(x), model)
    matmuls = [o for o in counts.ops if o.op == "aten::addmm"]
    assert [o.module for o in matmuls] == ["0", "2"]
    assert matmuls[0].flops == 2 * 8 * 256 * 512
    assert matmuls[0].weight_bytes == (256 * 512 + 512) * 4
    assert matmuls[0].bytes_read == matmuls[0].weight_bytes + 8 * 256 * 4
    assert matmuls[0].bytes_written == 8 * 512 * 4
    relu = next(o for o in counts.ops if o.op == "aten::relu")
    assert relu.module == "1" and relu.flops == 8 * 512 and relu.weight_bytes == 0
    assert counts.weight_bytes == parameter_bytes(model)
    assert counts.flops == sum(o.flops for o in counts.ops)
    assert counts.to_dict() == {
        "flops": counts.flops,
        "bytes_moved": counts.bytes_moved,
        "weight_bytes": counts.weight_bytes,
        "op_count": counts.op_count,
    }


def test_conv_flops_scale_with_batch_and_views_move_nothing():
    conv = nn.Conv2d(3, 16, 3)
    small = count_forward(lambda: conv(torch.ones(1, 3, 32, 32)), conv)
    large = count_forward(lambda: conv(torch.ones(4, 3, 32, 32)), conv)
    assert large.flops == 4 * small.flops > 0
    views = count_forward(lambda: torch.ones(4, 4).t().reshape(16))
    assert all(o.bytes_moved == 0 for o in views.ops if o.op in ("aten::t", "aten::view", "aten::_reshape_alias"))


def test_ops_outside_submodules_belong_to_root_and_in_place_writes_count_once():
    x = torch.ones(1000)
    counts = count_forward(lambda: x.mul(2).add_(1))
    assert isinstance(counts, Counts)
    assert [o.module for o in counts.ops] == [ROOT_MODULE, ROOT_MODULE]
    add = counts.ops[-1]
    assert add.op == "aten::add_" and add.bytes_written == 4000 and add.flops == 1000


def test_shared_parameters_are_counted_once():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, shared)
    assert parameter_bytes(model) == (16 + 4) * 4
