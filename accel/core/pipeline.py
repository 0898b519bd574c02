"""The pipeline contract: what accel profiles and optimizes.

A `Pipeline` is plain configuration: where raw samples come from (`source`), how each is decoded and
transformed, how samples become a batch (`collate`), the model, and what happens to its outputs.
`Pipeline.run()` runs the whole thing over the source through a torch DataLoader, as production code
would, and returns one result per source sample in source order. A sample's result does not
depend on which samples shared its batch: with no `postprocess` and HF-style dict batches carrying
an `attention_mask`, per-position outputs (such as `last_hidden_state`) are trimmed to the sample's
real positions, so a plan that changes padding (bucketing) returns the same results.

Optimizers never mutate a Pipeline: they build a new one with `Pipeline.replace(...)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info
from torch.utils.data._utils.collate import default_collate

from accel.core.errors import PipelineError
from accel.core.watchdog import watching

# DataLoader options a pipeline may carry beyond num_workers (set by loader tuning).
LOADER_OPTIONS = ("prefetch_factor", "persistent_workers", "pin_memory")


@dataclasses.dataclass(frozen=True, eq=False)
class Pipeline:
    """A model with the stages that feed it. See the README for the contract."""

    model: Any
    source: Any = None
    decode: Callable[[Any], Any] | None = None
    transform: Callable[[Any], Any] | None = None
    collate: Callable[[list], Any] | None = None
    batch_size: int = 1
    num_workers: int = 0
    inputs: Any = None
    generate: Callable[..., Any] | None = None
    postprocess: Callable[[Any], Any] | None = None
    metric: Callable[[list], float] | None = None
    # Beyond the public contract: what optimizers change at the pipeline level.
    loader_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # callable(pipeline) -> list of lists of source indices, one list per batch (e.g. bucketing).
    batch_plan: Callable[["Pipeline"], list[list[int]]] | None = None
    # callable(batch, forward) -> output; wraps the forward call (e.g. a result cache).
    forward_wrapper: Callable[[Any, Callable[[Any], Any]], Any] | None = None
    name: str = "pipeline"

    def __post_init__(self) -> None:
        if self.model is None or not callable(self.model):
            raise PipelineError(
                f"Pipeline(model=...) must be a torch.nn.Module or a callable, got {type(self.model).__name__}",
                "pass the model object itself, e.g. Pipeline(model=MyNet())",
            )
        for field in ("decode", "transform", "collate", "generate", "postprocess", "metric"):
            value = getattr(self, field)
            if value is not None and not callable(value):
                raise PipelineError(
                    f"Pipeline({field}=...) must be callable, got {type(value).__name__}",
                    f"pass a function for {field}, or leave it out",
                )
        for field in ("batch_size", "num_workers"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int):
                raise PipelineError(
                    f"Pipeline({field}=...) must be an int, got {type(value).__name__}",
                    f"pass e.g. {field}={1 if field == 'batch_size' else 0}",
                )
        if self.batch_size < 1:
            raise PipelineError(
                f"Pipeline(batch_size={self.batch_size}) must be at least 1", "use batch_size=1 or more"
            )
        if self.num_workers < 0:
            raise PipelineError(
                f"Pipeline(num_workers={self.num_workers}) must be 0 or more",
                "use num_workers=0 to load in the main process",
            )
        if self.source is None and self.inputs is None:
            raise PipelineError(
                "Pipeline needs a source of samples or an example batch in inputs",
                "pass source=[...] (raw samples) or inputs=(tensor, ...)",
            )
        if (
            self.source is not None
            and not isinstance(self.source, Iterable)
            and not hasattr(self.source, "__getitem__")
        ):
            raise PipelineError(
                f"Pipeline(source=...) must be a sequence or an iterable, got {type(self.source).__name__}",
                "pass a list, a Dataset or a generator of raw samples",
            )
        unknown = set(self.loader_options) - set(LOADER_OPTIONS)
        if unknown:
            raise PipelineError(f"unknown loader options {sorted(unknown)}", f"valid: {', '.join(LOADER_OPTIONS)}")

    # --- copying -------------------------------------------------------------------------------
    def replace(self, **changes: Any) -> "Pipeline":
        """A new Pipeline with some fields changed; this one is left as it is."""
        return dataclasses.replace(self, **changes)

    # --- the stages ----------------------------------------------------------------------------
    @property
    def has_source(self) -> bool:
        return self.source is not None

    @property
    def is_sequence(self) -> bool:
        return hasattr(self.source, "__len__") and hasattr(self.source, "__getitem__")

    def prepare(self, raw: Any) -> Any:
        """decode then transform one raw sample."""
        with watching("decode"):
            sample = self.decode(raw) if self.decode is not None else raw
        with watching("transform"):
            return self.transform(sample) if self.transform is not None else sample

    def collate_fn(self) -> Callable[[list], Any]:
        return self.collate if self.collate is not None else default_collate

    def call_model(self, batch: Any) -> Any:
        """Call the model with the batch unpacked: tuple -> args, dict -> kwargs, else one arg."""
        return call_unpacked(self.model, batch)

    def forward(self, batch: Any) -> Any:
        """What one batch costs the model: the generate loop if there is one, else one call."""
        with watching("model"):
            if self.forward_wrapper is not None:
                return self.forward_wrapper(batch, self._forward)
            return self._forward(batch)

    @property
    def forward_stage(self) -> str:
        """The stage a batch is handed to: "generate" when the pipeline has a generate loop (the
        model is called from inside it, if at all), else "model"."""
        return "model" if self.generate is None else "generate"

    def _forward(self, batch: Any) -> Any:
        if self.generate is not None:
            # Unpacked as the model's call is: generate(model, *tuple), generate(model, **dict).
            args, kwargs = split_call(batch)
            return self.generate(self.model, *args, **kwargs)
        return self.call_model(batch)

    def example_batch(self) -> Any:
        """One batch as the model sees it: `inputs`, or the first batch of the source."""
        if self.inputs is not None:
            return self.inputs
        for batch in self.iter_batches(limit_batches=1, num_workers=0):
            return batch
        raise PipelineError("the pipeline's source yielded no samples", "give the source at least one sample")

    # --- running -------------------------------------------------------------------------------
    def batch_indices(self) -> list[list[int]] | None:
        """The batches as lists of source indices, when the source is a sequence; else None."""
        if not self.is_sequence:
            return None
        if self.batch_plan is not None:
            return self.batch_plan(self)
        n = len(self.source)
        return [list(range(i, min(i + self.batch_size, n))) for i in range(0, n, self.batch_size)]

    def loader(self, *, num_workers: int | None = None, limit_batches: int | None = None) -> DataLoader:
        """The DataLoader that feeds the model, as `run()` uses it."""
        workers = self.num_workers if num_workers is None else num_workers
        options = (
            dict(self.loader_options)
            if workers > 0
            else {k: v for k, v in self.loader_options.items() if k == "pin_memory"}
        )
        if self.is_sequence:
            plan = self.batch_indices() or []  # a sequence source always has a plan
            if limit_batches is not None:
                plan = plan[:limit_batches]
            return DataLoader(
                _MapSource(self.source, self.prepare),
                batch_sampler=plan,
                collate_fn=self.collate_fn(),
                num_workers=workers,
                **options,
            )
        limit = None if limit_batches is None else limit_batches * self.batch_size
        return DataLoader(
            _StreamSource(self.source, self.prepare, self.batch_size, limit),
            batch_size=self.batch_size,
            collate_fn=self.collate_fn(),
            num_workers=workers,
            **options,
        )

    def iter_batches(self, *, num_workers: int | None = None, limit_batches: int | None = None) -> Iterable[Any]:
        if not self.has_source:
            yield self.inputs
            return
        yield from self.loader(num_workers=num_workers, limit_batches=limit_batches)

    def run(self) -> list:
        """Run the whole pipeline; one result per source sample, in source order."""
        with torch.inference_mode():
            if not self.has_source:
                output = self.forward(self.inputs)
                return [self.postprocess(output) if self.postprocess else output]
            plan = self.batch_indices()
            results: list = []
            for batch in self.iter_batches():
                output = self.forward(batch)
                items = split_batch(output, batch_length(batch))
                if self.postprocess is not None:
                    results.extend(self.postprocess(item) for item in items)
                    continue
                real = real_positions(batch)
                results.extend(items if real is None else (trim_padding(x, r) for x, r in zip(items, real)))
            if plan is not None and self.batch_plan is not None:
                order = [i for batch in plan for i in batch]
                ordered: list = [None] * len(order)
                for position, index in enumerate(order):
                    ordered[index] = results[position]
                results = ordered
            return results


def tensors_in(value: Any) -> list[torch.Tensor]:
    """Every tensor in a value, through mappings (ModelOutput too), lists and tuples, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in tensors_in(v)]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in tensors_in(v)]
    return []


def split_call(batch: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A batch as (args, kwargs), the way Pipeline.call_model unpacks it: tuple -> args,
    mapping -> kwargs, anything else -> one argument."""
    if isinstance(batch, tuple):
        return batch, {}
    if isinstance(batch, Mapping):
        return (), dict(batch)
    return (batch,), {}


def call_unpacked(fn: Callable[..., Any], batch: Any) -> Any:
    args, kwargs = split_call(batch)
    return fn(*args, **kwargs)


def batch_length(batch: Any) -> int:
    """How many samples a collated batch holds (the first dimension of its first tensor)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else 1
    if isinstance(batch, Mapping):
        for value in batch.values():
            return batch_length(value)
    if isinstance(batch, (list, tuple)) and batch:
        first = batch[0]
        if isinstance(first, (torch.Tensor, Mapping, list, tuple)):
            return batch_length(first)
        return len(batch)
    return 1


def real_positions(batch: Any) -> torch.Tensor | None:
    """Which positions of each row hold real tokens: the `attention_mask` (batch, padded length)
    of an HF-style dict batch, as booleans; None when the batch carries no such mask."""
    if not isinstance(batch, Mapping):
        return None
    mask = batch.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:
        return mask.bool()
    return None


def trim_padding(item: Any, real: torch.Tensor) -> Any:
    """One sample's output with its padded positions dropped.

    Per-position tensors (rank 2 or more whose first dimension is the padded length, such as a
    sample's `last_hidden_state` or token logits) keep only the positions `real` marks; anything
    else (a pooled vector, class logits) is left as it is. Rank 1 is never trimmed: a vector whose
    width happens to equal the padded length is not a per-position output."""
    if bool(real.all()):
        return item
    padded = real.shape[0]
    if isinstance(item, torch.Tensor):
        return item[real] if item.dim() >= 2 and item.shape[0] == padded else item
    if isinstance(item, Mapping):
        return {k: trim_padding(v, real) for k, v in item.items()}
    if isinstance(item, tuple):
        return tuple(trim_padding(v, real) for v in item)
    if isinstance(item, list):
        return [trim_padding(v, real) for v in item]
    return item


def split_batch(output: Any, size: int) -> list:
    """Split a batched model output into one item per sample."""
    if isinstance(output, torch.Tensor):
        if output.dim() > 0 and output.shape[0] == size:
            return list(output.unbind(0))
        return [output] * size if size == 1 else list(output.reshape(size, -1).unbind(0))
    if isinstance(output, Mapping):
        parts = {k: split_batch(v, size) for k, v in output.items()}
        return [{k: parts[k][i] for k in parts} for i in range(size)]
    if isinstance(output, tuple):
        columns = [split_batch(v, size) for v in output]
        return [tuple(c[i] for c in columns) for i in range(size)]
    if isinstance(output, list) and len(output) == size:
        return list(output)
    return [output] * size


class _MapSource(Dataset):
    def __init__(self, source: Sequence, prepare: Callable[[Any], Any]) -> None:
        self.source = source
        self.prepare = prepare

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Any:
        return self.prepare(self.source[index])


class _StreamSource(IterableDataset):
    """An iterable source; with workers, worker k takes whole batches k, k+W, ... so the
    DataLoader's round-robin over workers yields batches in source order."""

    def __init__(self, source: Iterable, prepare: Callable[[Any], Any], batch_size: int, limit: int | None) -> None:
        self.source = source
        self.prepare = prepare
        self.batch_size = batch_size
        self.limit = limit

    def __iter__(self):
        info = get_worker_info()
        workers, worker = (1, 0) if info is None else (info.num_workers, info.id)
        for i, raw in enumerate(self.source):
            if self.limit is not None and i >= self.limit:
                return
            if (i // self.batch_size) % workers == worker:
                yield self.prepare(raw)
