"""Measuring the padding of one collated batch, wherever it was added.

Three readings, the first that applies:
1. the `attention_mask` of an HF-style dict batch (`accel.core.pipeline.real_positions`): the
   positions it marks real against all of them. It sees padding whoever added it, the collate or
   the tokenizer (`tokenizer(..., padding="max_length")` gives samples already padded);
2. the batch's largest tensor against the same tensor in each sample: padding the collate added;
3. with no mask and no padding by the collate, runs of one pad token at the end of the rows of the
   largest 2-D integer tensor (token ids padded before batching).

Padding in columns that are padding in every row of the batch (past its longest sample) is
recorded apart as `trimmable_elements`: cutting those columns per batch removes it.
"""

from __future__ import annotations

from typing import Any

import torch

from accel.core.pipeline import real_positions, tensors_in
from accel.profiling.data import BatchPadding

TOKEN_DTYPES = (torch.int64, torch.int32)
# A trailing run of one value counts as padding only when it is at least this long in some row:
# a single shared last token is an end marker ([SEP], </s>), not padding.
MIN_PAD_RUN = 2


def _largest_tensor(value: Any) -> torch.Tensor | None:
    tensors = tensors_in(value)
    return max(tensors, key=lambda t: t.numel()) if tensors else None


def _from_shapes(samples: list[Any], batch: Any) -> BatchPadding | None:
    collated = _largest_tensor(batch)
    if collated is None or collated.dim() < 2:
        return None
    found = [_largest_tensor(s) for s in samples]
    per_sample = [t for t in found if t is not None]
    if len(per_sample) < len(found):
        return None
    real = sum(int(t.numel()) for t in per_sample)
    padded = int(collated.numel())
    if real > padded:
        return None
    lengths = tuple(int(t.shape[0]) if t.dim() else 1 for t in per_sample)
    return BatchPadding(real_elements=real, padded_elements=padded, sample_lengths=lengths)


def _from_real_positions(real: torch.Tensor, measured_from: str) -> BatchPadding:
    """Padding from a (rows, positions) boolean map of the real positions."""
    rows, width = real.shape
    lengths = real.sum(dim=1)
    used = real.any(dim=0).nonzero()
    last_used = int(used.max()) + 1 if used.numel() else 0
    return BatchPadding(
        real_elements=int(lengths.sum()),
        padded_elements=int(rows * width),
        sample_lengths=tuple(int(n) for n in lengths),
        measured_from=measured_from,
        trimmable_elements=int(rows * (width - last_used)),
    )


def pad_run_positions(batch: Any) -> torch.Tensor | None:
    """The real positions of the largest 2-D token-id tensor, when its rows end with runs of one pad
    id (the most common last value, ending at least half of the rows); None when they do not."""
    candidates = [t for t in tensors_in(batch) if t.dim() == 2 and t.dtype in TOKEN_DTYPES and t.shape[1] >= 2]
    if not candidates:
        return None
    ids = max(candidates, key=lambda t: t.numel())
    values, counts = ids[:, -1].unique(return_counts=True)
    if 2 * int(counts.max()) < ids.shape[0]:
        return None
    pad = values[counts.argmax()]
    run = (ids == pad).flip(1).long().cumprod(dim=1).sum(dim=1)
    if int(run.max()) < MIN_PAD_RUN:
        return None
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    return positions < (ids.shape[1] - run).unsqueeze(1)


def measure_padding(samples: list[Any], batch: Any) -> BatchPadding | None:
    """Padding of one batch: from its attention mask, else its shapes against its samples', else
    from pad-token runs at the end of its rows."""
    mask = real_positions(batch)
    if mask is not None and mask.numel() > 0:
        return _from_real_positions(mask, "attention_mask")
    shapes = _from_shapes(samples, batch)
    if shapes is not None and shapes.real_elements < shapes.padded_elements:
        return shapes
    runs = pad_run_positions(batch)
    if runs is not None:
        return _from_real_positions(runs, "pad_runs")
    return shapes
