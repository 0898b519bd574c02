"""Planted bad candidates for the fidelity guard: each one drops the planted model's dead work (so
it is much faster) and damages its outputs in one way a weaker guard misses. Registered by the
tests for the test and removed after; the engine, measurement and guard are the real ones."""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch

from accel.optimizing.optimizers import Applied, Optimizer

# Sample 19 is batch 2, sample 3: past the example batch, inside the validated batches.
BROKEN_SAMPLE = 19


def _in_batch(index: int, batch_start: int, size: int) -> int | None:
    return index - batch_start if batch_start <= index < batch_start + size else None


class Damaged(torch.nn.Module):
    """The fast model, with `damage(output, first_index)` applied to each batch's outputs."""

    def __init__(self, fast: torch.nn.Module, damage: Callable[[dict, torch.Tensor], Any]) -> None:
        super().__init__()
        self.fast, self.damage = fast, damage

    def forward(self, x: torch.Tensor) -> Any:
        return self.damage(self.fast(x), x)


def _row(x: torch.Tensor, index: int) -> int | None:
    """Which row of this batch holds source sample `index` (planted samples are told by value)."""
    from tests.planted.opt_guarded import samples

    target = samples()[index]
    for row in range(x.shape[0]):
        if torch.equal(x[row], target):
            return row
    return None


def all_nan(out, x):
    return {**out, "logits": torch.full_like(out["logits"], float("nan"))}


def one_inf(out, x):
    row = _row(x, BROKEN_SAMPLE)
    if row is not None:
        out["boxes"][row, 1] = float("inf")
    return out


def one_sample_broken(out, x):
    row = _row(x, BROKEN_SAMPLE)
    if row is not None:
        out["logits"][row] = out["logits"][row].flip(0)
    return out


def label_flipped(out, x):
    row = _row(x, BROKEN_SAMPLE)
    if row is not None:
        out["label"][row] = 1 - out["label"][row]
    return out


def offset_noise(out, x):
    """What int8 does to offset logits: noise in proportion to the values (the offset), so the
    small spread that decides the label drowns; a flattened cosine stays at 0.99999."""
    generator = torch.Generator().manual_seed(int(x.sum().abs() * 1000) % 1000)
    noise = torch.randn(out["logits"].shape, generator=generator) * 0.01 * out["logits"].abs()
    return {**out, "logits": out["logits"] + noise}


def top1_nudged(out, x):
    """Every fourth sample's runner-up class is raised just past the top one: a tiny change by
    every norm, and a changed label for a quarter of the samples."""
    logits = out["logits"].clone()
    for row in range(0, logits.shape[0], 4):
        order = logits[row].argsort(descending=True)
        logits[row, order[1]] = logits[row, order[0]] + 1e-3
    return {**out, "logits": logits}


def structure_changed(out, x):
    return (out["logits"], out["boxes"], out["label"])


def small_output_zeroed(out, x):
    return {**out, "boxes": torch.zeros_like(out["boxes"])}


def metric_dropped(out, x):
    """Raises the class after an even top class just past it: the planted metric (share of samples
    whose top class is even) falls to 0, while every norm barely moves."""
    logits = out["logits"].clone()
    for row in range(logits.shape[0]):
        top = int(logits[row].argmax())
        if top % 2 == 0:
            logits[row, (top + 1) % logits.shape[1]] = logits[row, top] + 1e-3
    return {**out, "logits": logits}


DAMAGES = {
    "nan": all_nan,
    "inf": one_inf,
    "one_sample": one_sample_broken,
    "label_flip": label_flipped,
    "offset_logits": offset_noise,
    "top1": top1_nudged,
    "structure": structure_changed,
    "small_zeroed": small_output_zeroed,
    "metric_drop": metric_dropped,
}


class Corrupting(Optimizer):
    damage_name: ClassVar[str] = ""

    def apply(self, pipeline, config, context):
        fast = pipeline.model.without_dead_work()
        return Applied(pipeline=pipeline.replace(model=Damaged(fast, DAMAGES[self.damage_name]).eval()))


def corrupting_optimizers() -> list[type[Optimizer]]:
    classes = []
    for kind in DAMAGES:
        classes.append(type(f"Corrupt_{kind}", (Corrupting,), {"name": f"test.corrupt.{kind}", "damage_name": kind}))
    return classes


class Faithful(Optimizer):
    """Drops the dead work and nothing else: the guard must let it through."""

    name = "test.faithful"

    def apply(self, pipeline, config, context):
        return Applied(pipeline=pipeline.replace(model=pipeline.model.without_dead_work()))


class FittedToCalibration(Optimizer):
    """Exact on the first two batches (those it 'calibrated' on, as its notes say), broken on the
    rest: validating on the calibration batches alone would pass it."""

    name = "test.fitted"

    def apply(self, pipeline, config, context):
        from tests.planted.opt_guarded import BATCH_SIZE, samples

        seen = samples()[: 2 * BATCH_SIZE]

        def damage(out, x):
            for row in range(x.shape[0]):
                if not any(torch.equal(x[row], s) for s in seen):
                    out["logits"][row] = out["logits"][row].flip(0)
            return out

        fast = pipeline.model.without_dead_work()
        return Applied(pipeline=pipeline.replace(model=Damaged(fast, damage).eval()), notes={"calibration_batches": 2})
