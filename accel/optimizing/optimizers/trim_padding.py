"""`batch.trim_padding`: cut the columns that are padding in every sample of a batch.

Samples padded before batching (`tokenizer(..., padding="max_length", max_length=512)`, the most
common call in Hugging Face snippets) reach the model as long as the longest any sample may be,
however short the batch's samples are; bucketing cannot help, since every sample has the same
length. After the pipeline's own collate, this cuts the trailing columns that the batch's
`attention_mask` marks as padding in every row, from every per-position tensor of the dict batch
(`input_ids`, `attention_mask`, `token_type_ids`, ...), so the model computes up to the batch's
longest real sample.

Results stay comparable as bucketing's do: `Pipeline.run()` trims each sample's per-position
outputs to its real positions (read from the same mask), so a result does not depend on how much
padding its batch had, and the guard compares like with like. Only trailing columns are cut (right
padding, the tokenizers' default): cutting leading ones would shift the positions of the real tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import torch

from accel.core.measure import now
from accel.core.pipeline import Pipeline, real_positions
from accel.optimizing.optimizers import Applied, Context, Optimizer, register

# Batches looked at to decide whether any column is padding in every sample: the first batch alone
# may hold one sample of the full length.
PROBE_BATCHES = 4


def padded_columns(batch: Any) -> tuple[int, int] | None:
    """(columns the batch keeps, its width): the trailing columns its attention mask marks as padding
    in every row are cut; None when the batch carries no attention mask."""
    real = real_positions(batch)
    if real is None:
        return None
    used = real.any(dim=0).nonzero()
    keep = int(used.max()) + 1 if used.numel() else 1
    return keep, int(real.shape[1])


def trim_batch(batch: Any) -> Any:
    """A dict batch with the trailing all-padding columns cut from its per-position tensors; any
    other batch as it is."""
    columns = padded_columns(batch)
    if columns is None or columns[0] == columns[1]:
        return batch
    keep, width = columns
    rows = int(batch["attention_mask"].shape[0])

    def cut(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.dim() >= 2 and value.shape[:2] == (rows, width):
            return value[:, :keep].contiguous()
        return value

    return {key: cut(value) for key, value in batch.items()}


class TrimmedCollate:
    """The pipeline's collate, then the padding columns cut (picklable for DataLoader workers)."""

    def __init__(self, collate: Callable[[list], Any]) -> None:
        self.collate = collate

    def __call__(self, samples: list) -> Any:
        return trim_batch(self.collate(samples))

    def __repr__(self) -> str:
        return f"TrimmedCollate({self.collate!r})"


@register
class TrimPadding(Optimizer):
    name = "batch.trim_padding"
    cures = ("padding",)
    description = (
        "Cut the columns that are padding in every sample of a batch (from its attention_mask): "
        "samples padded to a fixed length are computed only up to the batch's longest real sample."
    )

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        if not pipeline.has_source:
            return "the pipeline has no source: its example batch reaches the model as it is, with no collate"
        if isinstance(pipeline.collate, TrimmedCollate):
            return "the batches are already trimmed"
        found = [padded_columns(b) for b in pipeline.iter_batches(limit_batches=PROBE_BATCHES, num_workers=0)]
        if not found or any(columns is None for columns in found):
            return (
                "the batches carry no attention_mask (a dict batch's key): without it which positions "
                "are padding is a guess, and a model that attends to the padding computes other outputs "
                "without it"
            )
        if all(keep == width for keep, width in (c for c in found if c is not None)):
            return f"no column of the first {len(found)} batches is padding in every sample: they are padded per batch"
        return None

    def apply(self, pipeline: Pipeline, config: Any, context: Context) -> Applied:
        started = now()
        trimmed = pipeline.replace(collate=TrimmedCollate(pipeline.collate_fn()))
        first = pipeline.example_batch()
        columns = padded_columns(first) if isinstance(first, Mapping) else None
        notes = {"first_batch_columns": {"kept": columns[0], "of": columns[1]}} if columns else {}
        return Applied(pipeline=trimmed, state={}, setup_seconds=now() - started, notes=notes)

    def restore(self, pipeline: Pipeline, config: Any, state: dict[str, Any], lock_dir: Any) -> Pipeline:
        return pipeline.replace(collate=TrimmedCollate(pipeline.collate_fn()))
