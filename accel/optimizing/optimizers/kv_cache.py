"""`generation.kv_cache`: run the pipeline's generate loop with the KV cache on.

The generation finding's cure. A loop written with `use_cache=False` (or against a config that
turned the cache off) feeds the whole sequence at every step, so step time grows with the
position; with the cache each step feeds one token and reads the past keys and values. The
pipeline's own generate function is left unchanged: the model it is handed is a shallow copy
(same weights) whose `generate` gets `use_cache=True` (accel.core.kv_cache). Greedy decoding gives
the same tokens either way up to float rounding; the guard compares the tokens out, so a model
whose cached path decodes differently is reverted, not kept.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from accel.core.kv_cache import accepts_cache, generate_calls, is_cached, with_cache
from accel.core.measure import now
from accel.core.pipeline import Pipeline
from accel.optimizing.optimizers import Applied, Context, Optimizer, register

# A model-replacing optimizer that runs the generate loop itself (onnx.generate's decode step in ONNX
# Runtime) passes the past keys and values between steps as tensors: the cache is already on.
RUNS_OUTSIDE_TORCH = (
    "the generate loop runs outside torch (a graph runtime's decode step, such as onnx.generate's), "
    "which passes its KV cache between steps itself: use_cache has nothing to turn on"
)


def runs_outside_torch(model: Any) -> bool:
    """The model has a generate() but is no torch module: a runtime's loop, not transformers'."""
    return not isinstance(model, torch.nn.Module) and callable(getattr(model, "generate", None))


class NotThroughGenerate(RuntimeError):
    """The pipeline's generate never called model.generate, so there was no call to give the cache."""


@register
class KVCache(Optimizer):
    name = "generation.kv_cache"
    cures = ("generation",)
    description = "The generate loop with use_cache=True: each step feeds one new token, not the whole prefix."
    slot: ClassVar[str] = "generation"

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        if pipeline.generate is None:
            return "the pipeline has no generate loop"
        if is_cached(pipeline.model):
            return "the loop already runs with the cache forced on"
        if runs_outside_torch(pipeline.model):
            return RUNS_OUTSIDE_TORCH
        if not accepts_cache(pipeline.model):
            return "the model has no generate() taking use_cache/past_key_values (a transformers model has)"
        finding = context.report.finding("generation") if context.report is not None else None
        if finding is not None and finding.evidence.get("recomputed_tokens") == 0:
            return "the profile saw no call recompute a token: the loop already keeps its cache"
        return None

    def apply(self, pipeline: Pipeline, config: Any, context: Context) -> Applied:
        candidate = pipeline.replace(model=with_cache(pipeline.model))
        started = now()
        with torch.inference_mode():
            candidate.forward(candidate.example_batch())
        if not generate_calls(candidate.model):
            raise NotThroughGenerate(
                "the pipeline's generate does not call model.generate(), so use_cache cannot be set for it; "
                "pass use_cache=True in the loop's own model calls"
            )
        # The call above only proved the loop goes through model.generate; re-applying costs nothing.
        return Applied(
            pipeline=candidate, state={"use_cache": True}, setup_seconds=now() - started, recurring_seconds=0.0
        )

    def restore(self, pipeline: Pipeline, config: Any, state: dict[str, Any], lock_dir: Any) -> Pipeline:
        return pipeline.replace(model=with_cache(pipeline.model))
