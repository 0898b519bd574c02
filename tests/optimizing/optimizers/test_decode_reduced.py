"""decode.reduced: Pillow draft decoding when decode resizes JPEGs down, kept only within the guard."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import accel
from accel.core.machine import describe_machine
from accel.optimizing.optimizers import OPTIMIZERS, Context
from accel.optimizing.optimizers.decode_reduced import ReducedDecode, watch_pillow
from tests.paths import PLANTED

OPT = OPTIMIZERS.get("decode.reduced")


@pytest.fixture
def context(tmp_path):
    return Context(machine=describe_machine(), workdir=tmp_path)


def test_probe_sees_open_and_resize():
    pipeline = accel.load(PLANTED / "dp_decode_bound.py")
    calls = watch_pillow(pipeline.decode, pipeline.source[0])
    assert calls.opened == (("JPEG", (1024, 768)),)
    assert calls.resized[-1] == ((1024, 768), (64, 64))
    assert Image.open.__name__ == "open"  # the probe put Pillow back


def test_reduced_decode_is_faster_and_within_guard(context):
    pipeline = accel.load(PLANTED / "dp_decode_bound.py")
    assert OPT.applicable(pipeline, context) is None
    applied = OPT.apply(pipeline, OPT.Config(), context)
    assert isinstance(applied.pipeline.decode, ReducedDecode)
    notes = applied.notes
    assert notes["mean_abs_diff_share"] <= 0.01 and notes["cosine"] >= 0.995
    # 1/8-scale DCT on a 1024x768 JPEG: planted ~5x, asserted generously.
    assert notes["prepare_speedup"] > 1.5
    reference, reduced = pipeline.run(), applied.pipeline.run()
    assert all(a.shape == b.shape for a, b in zip(reference, reduced))
    restored = OPT.restore(pipeline, OPT.Config(), applied.state, context.workdir)
    assert torch.equal(restored.run()[0], reduced[0])


def test_guard_rejects_when_too_strict(context):
    pipeline = accel.load(PLANTED / "dp_decode_bound.py")
    applied = OPT.apply(pipeline, OPT.Config(max_mean_abs_diff_share=1e-6), context)
    assert applied.pipeline is pipeline
    assert applied.notes["kept"] is False


def _png(size=(256, 256)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros(size + (3,), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_refuses_png_and_no_downscale(context):
    def decode(data):
        image = Image.open(io.BytesIO(data)).convert("RGB").resize((32, 32))
        return torch.from_numpy(np.asarray(image, dtype=np.float32))

    png = accel.Pipeline(model=torch.nn.Identity(), source=[_png()], decode=decode)
    assert "only JPEG" in OPT.applicable(png, context)
    pipeline = accel.load(PLANTED / "dp_decode_bound.py")

    def decode_full(data):
        return torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32))

    assert "half its size" in OPT.applicable(pipeline.replace(decode=decode_full), context)
    assert "does not open" in OPT.applicable(pipeline.replace(decode=lambda b: torch.zeros(3)), context)
