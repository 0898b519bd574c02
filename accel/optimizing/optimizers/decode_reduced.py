"""`decode.reduced`: decode JPEGs at a reduced scale when they are resized down anyway.

A JPEG can be decoded at 1/2, 1/4 or 1/8 scale for a fraction of the cost (the DCT is cut short);
Pillow exposes this as `Image.draft`. The probe runs decode on a sample while watching
`PIL.Image.open` and `Image.resize`: if a JPEG is opened and then resized to at most half its size,
the reduced decode wraps the user's decode so that every image it opens is drafted to the smallest
scale still at least `oversample` times the resize target; the user's own resize then runs from
there. The result is kept only when the prepared samples agree with the original within the guard
(mean absolute difference relative to the value range, and cosine similarity).

The wrapper swaps `PIL.Image.open` for the duration of each decode call: safe in DataLoader worker
processes and in a single-threaded main process, not under concurrent decoding threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Iterator

import torch
from PIL import Image

from accel.core.errors import AccelError
from accel.core.measure import now
from accel.core.pipeline import Pipeline
from accel.optimizing.optimizers import Applied, Context, Optimizer, register

# Resizes to at most this share of the decoded size (per axis) make a reduced decode worth it.
MAX_TARGET_SHARE = 0.5
DEFAULT_OVERSAMPLES = (1, 2)
# Guard: on images in 0..1, a mean absolute difference of 1% of the range is below what resampling
# filters alone change; cosine 0.995 keeps the content.
DEFAULT_MAX_MEAN_ABS_DIFF_SHARE = 0.01
DEFAULT_MIN_COSINE = 0.995
GUARD_SAMPLES = 8


@dataclasses.dataclass(frozen=True)
class DecodeReducedConfig:
    oversamples: tuple[int, ...] = DEFAULT_OVERSAMPLES
    max_mean_abs_diff_share: float = DEFAULT_MAX_MEAN_ABS_DIFF_SHARE
    min_cosine: float = DEFAULT_MIN_COSINE

    def __post_init__(self) -> None:
        object.__setattr__(self, "oversamples", tuple(self.oversamples))
        if not self.oversamples or any(o < 1 for o in self.oversamples):
            raise ValueError(f"oversamples must be ints >= 1, got {self.oversamples}")
        if not 0 < self.max_mean_abs_diff_share < 1:
            raise ValueError(f"max_mean_abs_diff_share must lie in (0, 1), got {self.max_mean_abs_diff_share}")
        if not -1 <= self.min_cosine <= 1:
            raise ValueError(f"min_cosine must lie in -1..1, got {self.min_cosine}")


@dataclasses.dataclass(frozen=True)
class PillowCalls:
    opened: tuple[tuple[str, tuple[int, int]], ...]  # (format, size) of each opened image
    resized: tuple[tuple[tuple[int, int], tuple[int, int]], ...]  # (from size, to size)


@contextlib.contextmanager
def _swapped_open(on_open: Callable[[Any], None]) -> Iterator[None]:
    original = Image.open

    def open_and_watch(*args: Any, **kwargs: Any) -> Any:
        image = original(*args, **kwargs)
        on_open(image)
        return image

    Image.open = open_and_watch
    try:
        yield
    finally:
        Image.open = original


def watch_pillow(decode: Callable[[Any], Any], raw: Any) -> PillowCalls:
    """Run decode once, recording what Pillow opens and resizes."""
    opened: list = []
    resized: list = []
    original_resize = Image.Image.resize

    def resize_and_watch(self: Any, size: Any, *args: Any, **kwargs: Any) -> Any:
        resized.append((tuple(self.size), tuple(int(v) for v in size)))
        return original_resize(self, size, *args, **kwargs)

    setattr(Image.Image, "resize", resize_and_watch)
    try:
        with _swapped_open(lambda image: opened.append((image.format or "", tuple(image.size)))):
            decode(raw)
    finally:
        setattr(Image.Image, "resize", original_resize)
    return PillowCalls(tuple(opened), tuple(resized))


def reduction_target(calls: PillowCalls) -> tuple[int, int] | str:
    """The resize target of a JPEG resized down by half or more, or why there is none."""
    if not calls.opened:
        return "decode does not open images with PIL.Image.open"
    if not any(fmt == "JPEG" for fmt, _ in calls.opened):
        return f"decode opens {', '.join(sorted({fmt or 'unknown' for fmt, _ in calls.opened}))} images; only JPEG decodes at reduced scale"
    jpeg_sizes = {size for fmt, size in calls.opened if fmt == "JPEG"}
    for source, target in calls.resized:
        if (
            source in jpeg_sizes
            and target[0] <= source[0] * MAX_TARGET_SHARE
            and target[1] <= source[1] * MAX_TARGET_SHARE
        ):
            return target
    return "decode does not resize the JPEG it opens down to half its size or less"


class ReducedDecode:
    """The user's decode, with each opened JPEG drafted to a reduced scale first."""

    def __init__(self, decode: Callable[[Any], Any], draft_size: tuple[int, int]) -> None:
        self.decode = decode
        self.draft_size = draft_size

    def _draft(self, image: Any) -> None:
        if image.format == "JPEG":
            image.draft(None, self.draft_size)

    def __call__(self, raw: Any) -> Any:
        with _swapped_open(self._draft):
            return self.decode(raw)


def agreement(reference: Any, candidate: Any) -> tuple[float, float] | None:
    """(mean abs diff / value range, cosine) of two prepared samples; None if shapes differ."""
    if (
        isinstance(reference, (tuple, list))
        and isinstance(candidate, (tuple, list))
        and len(reference) == len(candidate)
    ):
        parts = [agreement(a, b) for a, b in zip(reference, candidate)]
        found = [p for p in parts if p is not None]
        if len(found) < len(parts):
            return None
        return max(p[0] for p in found), min(p[1] for p in found)
    if not (isinstance(reference, torch.Tensor) and isinstance(candidate, torch.Tensor)):
        return (0.0, 1.0) if reference == candidate else None
    if reference.shape != candidate.shape:
        return None
    a, b = reference.double().flatten(), candidate.double().flatten()
    span = float(a.max() - a.min()) or 1.0
    cosine = float(torch.nn.functional.cosine_similarity(a, b, dim=0)) if a.numel() else 1.0
    return float((a - b).abs().mean()) / span, cosine


def _seconds_per_sample(prepare: Callable[[Any], Any], samples: list[Any]) -> float:
    prepare(samples[0])
    start = now()
    for raw in samples:
        prepare(raw)
    return (now() - start) / len(samples)


@register
class DecodeReduced(Optimizer):
    name = "decode.reduced"
    cures = ("input_decoding",)
    description = (
        "Decode JPEGs at reduced scale (Pillow draft) when decode resizes them down; kept within a pixel guard."
    )
    Config = DecodeReducedConfig
    slot = "data.decode"
    runtime_packages = ("Pillow",)

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        if pipeline.decode is None:
            return "the pipeline has no decode stage"
        if isinstance(pipeline.decode, ReducedDecode):
            return "decode already runs at reduced scale"
        if not pipeline.is_sequence or len(pipeline.source) == 0:
            return "the source is not a sequence of samples to probe"
        target = reduction_target(watch_pillow(pipeline.decode, pipeline.source[0]))
        return target if isinstance(target, str) else None

    def apply(self, pipeline: Pipeline, config: DecodeReducedConfig, context: Context) -> Applied:
        if pipeline.decode is None:
            raise AccelError("decode.reduced needs a decode stage", "give the Pipeline a decode function")
        target = reduction_target(watch_pillow(pipeline.decode, pipeline.source[0]))
        if isinstance(target, str):
            raise AccelError(f"decode.reduced cannot apply: {target}", "it applies to Pillow decodes that resize")
        samples = [pipeline.source[i] for i in range(min(GUARD_SAMPLES, len(pipeline.source)))]
        references = [pipeline.prepare(raw) for raw in samples]
        tried = []
        for oversample in config.oversamples:
            draft = (target[0] * oversample, target[1] * oversample)
            candidate = pipeline.replace(decode=ReducedDecode(pipeline.decode, draft))
            scores = [agreement(r, candidate.prepare(raw)) for r, raw in zip(references, samples)]
            found = [s for s in scores if s is not None]
            if len(found) < len(scores):
                tried.append({"oversample": oversample, "verdict": "outputs differ in shape or type"})
                continue
            diff, cosine = max(s[0] for s in found), min(s[1] for s in found)
            entry = {"oversample": oversample, "mean_abs_diff_share": diff, "cosine": cosine}
            if diff <= config.max_mean_abs_diff_share and cosine >= config.min_cosine:
                before = _seconds_per_sample(pipeline.prepare, samples)
                after = _seconds_per_sample(candidate.prepare, samples)
                notes = {
                    **entry,
                    "resize_target": list(target),
                    "draft_size": list(draft),
                    "prepare_seconds_per_sample_before": before,
                    "prepare_seconds_per_sample_after": after,
                    "prepare_speedup": before / after if after > 0 else float("inf"),
                    "tried": tried + [entry],
                }
                return Applied(candidate, state={"draft_size": list(draft)}, notes=notes)
            tried.append({**entry, "verdict": "outside the guard"})
        return Applied(
            pipeline,
            state={},
            notes={"kept": False, "reason": "no reduced scale agreed within the guard", "tried": tried},
        )

    def restore(
        self, pipeline: Pipeline, config: DecodeReducedConfig, state: dict[str, Any], lock_dir: Any
    ) -> Pipeline:
        if not state.get("draft_size") or pipeline.decode is None:
            return pipeline
        return pipeline.replace(decode=ReducedDecode(pipeline.decode, tuple(state["draft_size"])))
