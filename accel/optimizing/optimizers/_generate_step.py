"""The decode step of a decoder-only causal LM, exported to ONNX with its KV cache as explicit tensors.

One graph serves the whole loop: inputs `input_ids` [batch, seq], `attention_mask` [batch, past+seq],
`position_ids` [batch, seq] and, per layer, `past_key_i` / `past_value_i` [batch, kv_heads, past,
head_dim]; outputs the last position's `logits` [batch, vocab] and `present_key_i` /
`present_value_i` [batch, kv_heads, past+seq, head_dim]. The prompt is fed with a past of length 0,
each next token with the presents of the step before. Batch, sequence and past axes are dynamic.

What worked with torch 2.13 / ORT 1.32 (the issue's measurements): the TorchScript exporter on a
copy of the model switched to eager attention; the step is traced with a past of a few positions
and two new tokens, so neither axis is specialised at 0 or 1. The cache's layout (layers, KV heads,
head size) is read from one real forward, not from config field names that differ per model.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import warnings
from pathlib import Path
from typing import Any

import torch

from accel.core.errors import AccelError
from accel.optimizing.optimizers import _export_cache
from accel.optimizing.optimizers._onnx_export import quiet

# Positions of past the step is traced with, and new tokens: neither 0 nor 1, so the tracer keeps
# both axes symbolic rather than folding a size-1 or empty branch into the graph.
TRACE_PAST = 3
TRACE_TOKENS = 2
STEP_INPUTS = ("input_ids", "attention_mask", "position_ids")


@dataclasses.dataclass(frozen=True)
class CacheLayout:
    """The KV cache of one step: `layers` pairs of [batch, kv_heads, positions, head_dim] tensors."""

    layers: int
    kv_heads: int
    head_dim: int

    def __post_init__(self) -> None:
        for name in ("layers", "kv_heads", "head_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

    @property
    def past_names(self) -> list[str]:
        return [f"past_{kind}_{i}" for i in range(self.layers) for kind in ("key", "value")]

    @property
    def input_names(self) -> list[str]:
        return [*STEP_INPUTS, *self.past_names]

    @property
    def output_names(self) -> list[str]:
        return ["logits", *(f"present_{kind}_{i}" for i in range(self.layers) for kind in ("key", "value"))]

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "CacheLayout":
        if not isinstance(data, dict):
            raise ValueError(f"cache_layout must be a mapping, got {type(data).__name__}")
        return cls(layers=data.get("layers"), kv_heads=data.get("kv_heads"), head_dim=data.get("head_dim"))  # type: ignore[arg-type]  # __post_init__ checks each


class SteppedLoop:
    """What the generate loops run in a graph runtime share: a decode `step` (an OrtModel or OvModel)
    whose thread count runtime.threads (and, in ONNX Runtime, whose spinning runtime.spinning) reads
    and sets by building the step again."""

    step: Any

    @property
    def threads(self) -> int:
        return int(self.step.threads)

    def rethreaded(self, threads: int) -> Any:
        """The same loop over its step built again at `threads` threads (runtime.threads)."""
        loop = copy.copy(self)
        loop.step = self.step.rethreaded(threads)
        return loop

    @property
    def spinning(self) -> bool | None:
        """Whether the step's session threads spin between ops; None for a runtime without the setting."""
        return getattr(self.step, "spinning", None)

    def respun(self, spinning: bool) -> Any:
        """The same loop over its step built again spinning, or not (runtime.spinning; ORT steps only)."""
        loop = copy.copy(self)
        loop.step = self.step.respun(spinning)
        return loop


def decoder_problem(model: Any) -> str | None:
    """Why `model` is not a decoder-only causal LM whose step can be exported with its cache, or None."""
    config = getattr(model, "config", None)
    if config is None or not callable(getattr(model, "generate", None)):
        return "the model is not a transformers generation model (no config and generate())"
    if getattr(config, "is_encoder_decoder", False):
        return "the model is an encoder-decoder; accel's graph loop runs decoder-only causal LMs"
    try:
        parameters = set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return "the model's forward has no signature to read"
    missing = [name for name in ("past_key_values", *STEP_INPUTS) if name not in parameters]
    if missing:
        return f"the model's forward takes no {', '.join(missing)}: its cache cannot be fed as tensors"
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    if dtype != torch.float32:
        return f"the model's weights are {str(dtype).removeprefix('torch.')}; the step is exported in float32 only"
    return None


def _cache_tensors(cache: Any) -> list[torch.Tensor]:
    """A transformers cache's tensors, key and value per layer, in order."""
    layers = getattr(cache, "layers", None)
    if layers is None:
        raise AccelError(
            f"the model returned a {type(cache).__name__} cache accel cannot read",
            "accel's graph loop reads transformers' DynamicCache (transformers 5)",
        )
    return [tensor for layer in layers for tensor in (layer.keys, layer.values)]


class _Step(torch.nn.Module):
    """The model's forward with its cache as flat tensors in and out, and the last position's logits."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.training = model.training
        self.logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters

    def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, *past: Any) -> tuple[Any, ...]:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for layer in range(len(past) // 2):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        # lm_head on the last position only, where the model allows it: the prompt's step is the
        # only one fed more than one token, and only its last row is ever read.
        extra = {"logits_to_keep": 1} if self.logits_to_keep else {}
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            **extra,
        )
        return (out.logits[:, -1, :], *_cache_tensors(out.past_key_values))


def eager_copy(model: Any) -> Any:
    """The model to trace: a copy switched to eager attention when it runs another (the user's
    model is left as it was), else the model itself."""
    current = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if current in (None, "eager") or not callable(getattr(model, "set_attn_implementation", None)):
        return model
    switched = copy.deepcopy(model)
    switched.set_attn_implementation("eager")
    return switched


def cache_layout(model: torch.nn.Module, ids: torch.Tensor) -> tuple[CacheLayout, list[torch.Tensor]]:
    """The layout of the model's KV cache, read from one forward over `ids`, and that cache."""
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True)
    tensors = _cache_tensors(out.past_key_values)
    shapes = {tuple(t.shape[1:2]) + tuple(t.shape[3:]) for t in tensors}
    if len(tensors) < 2 or len(shapes) != 1 or any(t.dim() != 4 for t in tensors):
        raise AccelError(
            "the model's KV cache is not one [batch, heads, positions, head_dim] shape for every layer",
            "accel's graph loop runs caches of uniform shape (GPT-2, Llama and the like)",
        )
    heads, head_dim = next(iter(shapes))
    return CacheLayout(layers=len(tensors) // 2, kv_heads=int(heads), head_dim=int(head_dim)), tensors


def export_step(
    model: torch.nn.Module, prompt: torch.Tensor, path: Path, *, opset: int, reuse: bool = True
) -> CacheLayout:
    """Export the decode step of `model` to `path`; `prompt` (token ids) gives the trace its values.
    Once per search (`_export_cache`, unless not `reuse`): GPT-2 small's step takes 17 s to
    export, and each generate-loop candidate and rung begins from it."""
    settings = repr(("decode step", opset, tuple(prompt.shape[:1]), str(prompt.dtype)))
    kept = _export_cache.reuse(model, settings, path) if reuse else None
    if kept is not None:
        return CacheLayout.from_dict(kept)
    path.parent.mkdir(parents=True, exist_ok=True)
    files_before = {p.name for p in path.parent.iterdir()}
    layout = _export_step(model, prompt, path, opset)
    if reuse:
        _export_cache.remember(model, settings, path, layout.to_dict(), files_before)
    return layout


def _export_step(model: torch.nn.Module, prompt: torch.Tensor, path: Path, opset: int) -> CacheLayout:
    traced = eager_copy(model)
    batch = prompt.shape[0]
    ids = prompt[:, :1].expand(batch, TRACE_PAST + TRACE_TOKENS).contiguous()
    layout, past = cache_layout(traced, ids[:, :TRACE_PAST])
    positions = torch.arange(TRACE_PAST, TRACE_PAST + TRACE_TOKENS).expand(batch, TRACE_TOKENS)
    mask = torch.ones(batch, TRACE_PAST + TRACE_TOKENS, dtype=torch.long)
    axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "total"},
        "position_ids": {0: "batch", 1: "sequence"},
        "logits": {0: "batch"},
    }
    axes.update({name: {0: "batch", 2: "past"} for name in layout.past_names})
    axes.update({name: {0: "batch", 2: "total"} for name in layout.output_names[1:]})
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), quiet(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Step(traced),
            (ids[:, TRACE_PAST:], mask, positions, *past),
            str(path),
            input_names=layout.input_names,
            output_names=layout.output_names,
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    return layout
