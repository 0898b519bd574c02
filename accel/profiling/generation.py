"""The generation pass of `accel profile` (pipelines with `generate`): every model call of the loop.

Hooks on the model (keyword arguments included: Hugging Face's generate() calls
`model(input_ids=..., past_key_values=..., ...)`) record, per call, its seconds, the tokens it was
fed and where they sit in the sequence: the cache's length before the call (`past_key_values`)
is the offset of the first token fed. Each call's tokens are compared with the previous call's at
the same positions: the leading run that matches was computed again (a loop without a KV cache
feeds the whole sequence every step; with one, each call starts where the last one ended).

Where the loop recomputes and the model takes `use_cache` (a transformers model called through its
`generate`), the loop is also run with `use_cache=True` forced into that `generate` call,
interleaved with the loop as written, so the gain of turning the cache on is measured, not guessed.
"""

from __future__ import annotations

import contextlib
import statistics
from typing import Any, Callable, Iterator

import torch

from accel.core.budget import PassBudget
from accel.core.counts import parameter_bytes
from accel.core.kv_cache import accepts_cache, generate_calls, with_cache
from accel.core.machine import Machine
from accel.core.measure import device_sync, now
from accel.core.pipeline import Pipeline, batch_length, tensors_in
from accel.profiling.data import GenerationProfile, GenerationStep

# Generate loops timed (each way); each step's time is its median over them.
GENERATION_LOOPS = 3
# Where a call's token ids are, most specific first: an encoder-decoder's decoder sees
# decoder_input_ids (its encoder runs once, outside the loop's model calls).
TOKEN_KEYWORDS = ("decoder_input_ids", "input_ids")


def call_tokens(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The token ids a model call was fed: a keyword the transformers models use, else the first
    integer tensor among the positional arguments."""
    for key in TOKEN_KEYWORDS:
        value = kwargs.get(key)
        if isinstance(value, torch.Tensor):
            return value
    for tensor in tensors_in(args):
        if not tensor.is_floating_point() and not tensor.is_complex() and tensor.dim() >= 1:
            return tensor
    return None


def cached_length(kwargs: dict) -> int:
    """Tokens already in the call's KV cache (0 without one): the offset of the tokens it is fed."""
    past = kwargs.get("past_key_values")
    if past is None:
        return 0
    if hasattr(past, "get_seq_length"):
        return int(past.get_seq_length())
    keys = tensors_in(past)
    return int(keys[0].shape[-2]) if keys and keys[0].dim() >= 2 else 0


def recomputed_tokens(tokens: torch.Tensor, offset: int, previous: tuple[torch.Tensor, int] | None) -> int:
    """Positions of this call that the previous call computed with the same tokens (a leading run)."""
    if previous is None:
        return 0
    before, before_offset = previous
    start = max(offset, before_offset)
    end = min(offset + tokens.shape[-1], before_offset + before.shape[-1])
    if end <= start or start != offset or tokens.shape[:-1] != before.shape[:-1]:
        return 0
    mine = tokens[..., start - offset : end - offset]
    theirs = before[..., start - before_offset : end - before_offset]
    equal = (mine == theirs).reshape(-1, end - start).all(dim=0)
    mismatch = (~equal).nonzero()
    return int(mismatch[0, 0]) if mismatch.numel() else end - start


class _Recorder:
    """Forward hooks that record every model call of a loop as a GenerationStep."""

    def __init__(self, sync: Callable[[], None], clock: Callable[[], float], first_call: list) -> None:
        self.sync, self.clock = sync, clock
        self.first_call = first_call
        self.steps: list[GenerationStep] = []
        self._started: list[tuple[float, int, int, int]] = []
        self._previous: tuple[torch.Tensor, int] | None = None

    def reset(self) -> None:
        self.steps, self._started, self._previous = [], [], None

    def before(self, _module: Any, args: tuple, kwargs: dict) -> None:
        if not self.first_call:
            # The call as the loop makes it, for the cost and memory passes; a cache it was handed
            # is left out (the first call's is empty, and a kept one would grow with every call).
            self.first_call.append((args, {k: v for k, v in kwargs.items() if k != "past_key_values"}))
        tokens = call_tokens(args, kwargs)
        offset = cached_length(kwargs)
        fed = int(tokens.shape[-1]) if tokens is not None else 0
        again = recomputed_tokens(tokens, offset, self._previous) if tokens is not None else 0
        if tokens is not None:
            self._previous = (tokens.detach().clone(), offset)
        self.sync()
        self._started.append((self.clock(), offset + fed, fed, again))

    def after(self, _module: Any, _args: tuple, _kwargs: dict, _output: Any) -> None:
        self.sync()
        t0, position, fed, again = self._started.pop()
        self.steps.append(
            GenerationStep(position=position, seconds=self.clock() - t0, tokens=fed, recomputed_tokens=again)
        )


def _median_steps(loops: list[list[GenerationStep]]) -> list[GenerationStep]:
    """Per step, the median over the loops: a step slowed by other load in one loop is outvoted."""
    count = min(len(loop) for loop in loops)
    return [
        GenerationStep(
            position=loops[0][i].position,
            seconds=statistics.median(loop[i].seconds for loop in loops),
            tokens=loops[0][i].tokens,
            recomputed_tokens=loops[0][i].recomputed_tokens,
        )
        for i in range(count)
    ]


Loop = tuple[float, list[GenerationStep], Any]  # (seconds, its model calls, its output)


def generation_pass(
    pipeline: Pipeline,
    batch: Any,
    machine: Machine,
    clock: Callable[[], float] = now,
    first_call: list | None = None,
    budget: PassBudget | None = None,
) -> GenerationProfile | None:
    """Time every model call inside GENERATION_LOOPS generate loops (after one loop as warm-up);
    where the loop recomputes and the model takes a cache, as many loops with it on, interleaved.
    As many loops as `budget` holds: where not one more round fits, the warm-up loops stand as the
    measurement (the pass is then cut short). `first_call` receives the (args, kwargs) of the loop's
    first model call."""
    model = pipeline.model
    if pipeline.generate is None or not isinstance(model, torch.nn.Module):
        return None
    budget = budget or PassBudget("generation", float("inf"), clock=clock)
    sync = device_sync(machine.device)
    recorder = _Recorder(sync, clock, first_call if first_call is not None else [])

    def timed_loop(run: Pipeline) -> Loop:
        recorder.reset()
        began = clock()
        output = run.forward(batch)
        sync()
        budget.calls += 1
        return clock() - began, list(recorder.steps), output

    with _hooked(model, recorder), torch.inference_mode():
        warm = timed_loop(pipeline)
        cached_pipeline, cache_note, cached_warm = _with_cache_forced(pipeline, warm[1], timed_loop)
        round_seconds = warm[0] + (cached_warm[0] if cached_warm else 0.0)
        rounds = budget.fit(round_seconds, GENERATION_LOOPS, minimum=0)
        plain: list[Loop] = [] if rounds else [warm]
        cached: list[Loop] = [] if rounds or cached_warm is None else [cached_warm]
        for _ in range(rounds):
            plain.append(timed_loop(pipeline))
            if cached_pipeline is not None:
                cached.append(timed_loop(cached_pipeline))
    return _generation_profile(plain, cached, model, batch, cache_note)


@contextlib.contextmanager
def _hooked(model: torch.nn.Module, recorder: _Recorder) -> Iterator[None]:
    """The recorder sees every call of the model while the block runs."""
    pre = model.register_forward_pre_hook(recorder.before, with_kwargs=True)
    post = model.register_forward_hook(recorder.after, with_kwargs=True)
    try:
        yield
    finally:
        pre.remove()
        post.remove()


def _with_cache_forced(
    pipeline: Pipeline, warm_steps: list[GenerationStep], timed_loop: Callable[[Pipeline], Loop]
) -> tuple[Pipeline | None, str | None, Loop | None]:
    """The pipeline with the KV cache forced on and its warm-up loop, where the loop recomputes and
    the cache can be forced; else None and, where the loop recomputes, why the cache's gain is not
    measured."""
    model = pipeline.model
    if not any(s.recomputed_tokens for s in warm_steps):
        return None, None, None
    if not accepts_cache(model):
        return None, "the model takes no use_cache/past_key_values: the cache's gain was not measured", None
    # The forced copy shares the model's parameters and hooks: the recorder sees its calls.
    cached_pipeline = pipeline.replace(model=with_cache(model))
    warm = timed_loop(cached_pipeline)  # warm-up with the cache on
    if not generate_calls(cached_pipeline.model):
        return None, "the pipeline's generate does not call model.generate: the cache was not forced", None
    return cached_pipeline, None, warm


def _generation_profile(
    plain: list[Loop], cached: list[Loop], model: torch.nn.Module, batch: Any, cache_note: str | None
) -> GenerationProfile | None:
    steps = _median_steps([loop for _, loop, _ in plain])
    if not steps:
        return None
    cached_steps = _median_steps([loop for _, loop, _ in cached]) if cached else []
    return GenerationProfile(
        steps=tuple(steps),
        total_seconds=statistics.median(seconds for seconds, _, _ in plain),
        parameter_bytes=parameter_bytes(model),
        batch_size=batch_length(batch),
        cached_total_seconds=statistics.median(seconds for seconds, _, _ in cached) if cached else None,
        cached_steps=tuple(cached_steps),
        cache_outputs_equal=_same(plain[0][2], cached[0][2]) if cached else None,
        cache_note=cache_note,
    )


def _same(a: Any, b: Any) -> bool:
    left, right = tensors_in(a), tensors_in(b)
    return len(left) == len(right) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(left, right))
