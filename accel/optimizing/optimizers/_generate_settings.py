"""What a pipeline's generate loop asks of transformers' `generate()`, and whether accel's graph loop
can decode it token for token the same.

A pipeline's generate function is user code that calls `model.generate(ids, **settings)`. The call is
found by a probe: the function is run once with a shallow copy of the model (same weights) whose
`generate` records its arguments and stops the function at once, so finding it costs no decoding.
A loop written by hand against the model's forward is seen too: the copy's forward stops it.

The settings are resolved as transformers resolves them (the call's keywords over the model's
`generation_config` over the library defaults), then judged: greedy decoding with a length limit,
a minimum length, end-of-sequence and pad tokens is what accel's loop runs; anything that changes
which token is picked (beam search, sampling, penalties, logits processors) is "not applicable"
with the setting named, never approximated.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch

from accel.core.pipeline import Pipeline, split_call

# generate() keywords accel's loop takes as they are: the prompt and its padding mask.
MODEL_INPUTS = ("input_ids", "attention_mask")
# generate()'s own arguments that plug code into the loop: accel's loop cannot run them.
HOOKS = (
    "logits_processor",
    "stopping_criteria",
    "prefix_allowed_tokens_fn",
    "assistant_model",
    "streamer",
    "negative_prompt_ids",
    "negative_prompt_attention_mask",
    "custom_generate",
)
# Settings accel's loop reads (lengths, special tokens), and those greedy decoding never reads
# (sampling's warpers, beam search's length penalty and stopping, the cache's layout): a value other
# than the default changes no token a greedy loop picks.
HANDLED = (
    "max_length",
    "max_new_tokens",
    "min_length",
    "min_new_tokens",
    "eos_token_id",
    "pad_token_id",
    "bos_token_id",
    "use_cache",
    "cache_implementation",
    "transformers_version",
    "_from_model_config",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "top_h",
    "typical_p",
    "epsilon_cutoff",
    "eta_cutoff",
    "length_penalty",
    "early_stopping",
    "synced_gpus",
)
# transformers' default: 20 new tokens when no length is set (capped by the model's positions).
DEFAULT_NEW_TOKENS = 20


class _Recorded(Exception):
    """Raised by the probe's generate: the call was seen, the pipeline's function stops there."""

    def __init__(self, args: tuple, kwargs: dict[str, Any]) -> None:
        super().__init__("generate() called")
        self.args = args
        self.kwargs = kwargs


class _CalledDirectly(Exception):
    """Raised by the probe's forward: the pipeline's loop calls the model itself."""


@dataclasses.dataclass(frozen=True)
class GenerateCall:
    """The arguments the pipeline's generate function passed to model.generate()."""

    args: tuple
    kwargs: dict[str, Any]


def _probe_class(cls: type) -> type:
    def generate(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise _Recorded(args, kwargs)

    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise _CalledDirectly()

    return type(cls.__name__, (cls,), {"generate": generate, "forward": forward, "__module__": cls.__module__})


def probe_generate_call(pipeline: Pipeline) -> GenerateCall | str:
    """The call the pipeline's generate function makes to model.generate() on its example batch, or
    why there is none to replace."""
    if pipeline.generate is None:
        return "the pipeline has no generate loop"
    model = pipeline.model
    if not isinstance(model, torch.nn.Module) or not callable(getattr(model, "generate", None)):
        return "the model has no generate() (a transformers causal LM has)"
    probe = copy.copy(model)
    probe.__class__ = _probe_class(type(model))
    args, kwargs = split_call(pipeline.example_batch())
    try:
        with torch.inference_mode():
            pipeline.generate(probe, *args, **kwargs)
    except _Recorded as call:
        return GenerateCall(call.args, call.kwargs)
    except _CalledDirectly:
        return "the pipeline's generate calls the model's forward itself, not model.generate(): its loop is user code"
    except Exception as exc:  # the user's function failed on the probe, before any generate() call
        return f"the pipeline's generate raised {type(exc).__name__} before calling model.generate(): {exc}"[:300]
    return "the pipeline's generate never calls model.generate()"


@dataclasses.dataclass(frozen=True)
class Greedy:
    """One greedy decoding, resolved: the prompt, its mask, and when to stop."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    max_length: int  # total length, prompt included, as transformers counts it
    min_length: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int | None


def _resolved_config(model: Any, generation_config: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The generation config generate() would run with, and the keywords left for the model."""
    prepare = getattr(model, "_prepare_generation_config", None)
    if callable(prepare):  # transformers' own merge, so the defaults are the ones generate() applies
        return prepare(generation_config, **kwargs)
    merged = copy.deepcopy(generation_config if generation_config is not None else model.generation_config)
    return merged, merged.update(**kwargs)


def _unsupported(config: Any) -> str | None:
    """Why accel's greedy loop would not pick the same tokens under `config`, or None."""
    from transformers import GenerationConfig

    if (config.num_beams or 1) > 1:
        return (
            f"beam search (num_beams={config.num_beams}) keeps several hypotheses; accel's graph loop decodes greedily"
        )
    if config.do_sample:
        return "sampling (do_sample=True) draws random tokens the exact guard cannot compare; accel's loop decodes greedily"
    defaults = GenerationConfig()
    defaults.update(**defaults._get_default_generation_params(), defaults_only=True)
    changed = sorted(
        key
        for key, value in config.to_dict().items()
        if key not in HANDLED and not key.startswith("_") and _differs(value, getattr(defaults, key, None))
    )
    if changed:
        shown = ", ".join(f"{key}={getattr(config, key)!r}" for key in changed[:4])
        return f"generation settings accel's graph loop does not run: {shown} (it runs greedy decoding, eos and pad)"
    return None


def _differs(value: Any, default: Any) -> bool:
    """A setting other than the default; unset and off (None, False, 0) are one value."""
    return value != default and bool(value or default)


def _token_ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, torch.Tensor):
        return tuple(int(v) for v in value.flatten().tolist())
    return tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)


def _lengths(model: Any, config: Any, explicit_max: bool, prompt_length: int) -> tuple[int, int]:
    """max_length and min_length as totals, as transformers' _prepare_generated_length sets them."""
    if config.max_new_tokens is not None:
        max_length = config.max_new_tokens + prompt_length
    elif explicit_max:
        max_length = int(config.max_length)
    else:
        max_length = (config.max_length or DEFAULT_NEW_TOKENS) + prompt_length
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        max_length = min(max_length, positions) if positions else max_length
    min_length = config.min_new_tokens + prompt_length if config.min_new_tokens is not None else config.min_length or 0
    return max_length, int(min_length)


def _mask(ids: torch.Tensor, given: Any, pad: int | None, eos: tuple[int, ...]) -> torch.Tensor:
    """The prompt's attention mask: the one given, else inferred from pad tokens as generate() does
    (only when the pad token is in the prompt and is not an end-of-sequence token)."""
    if given is not None:
        return given.to(torch.long)
    if pad is not None and bool((ids == pad).any()) and pad not in eos:
        return ids.ne(pad).long()
    return torch.ones(ids.shape[:2], dtype=torch.long)


def _unpacked(call: GenerateCall) -> tuple[Any, Any, dict[str, Any]] | str:
    """The prompt, the generation_config and the other keywords of a generate() call, or why
    accel's loop cannot take it (user code plugged into the loop, positional arguments it does not read)."""
    kwargs = dict(call.kwargs)
    hooks = [name for name in HOOKS if kwargs.pop(name, None) is not None]
    if hooks:
        return f"generate() is given {', '.join(hooks)}: user code inside the loop, which accel's graph loop cannot run"
    args = list(call.args)
    ids = kwargs.pop("inputs", None)
    ids = args.pop(0) if ids is None and args else ids
    generation_config = args.pop(0) if args else kwargs.pop("generation_config", None)
    if args:
        return f"generate() is given {len(args)} more positional arguments than accel's graph loop reads"
    return ids, generation_config, kwargs


def resolve_greedy(model: Any, call: GenerateCall) -> Greedy | str:
    """The greedy decoding `call` asks for, or why accel's loop cannot run it."""
    unpacked = _unpacked(call)
    if isinstance(unpacked, str):
        return unpacked
    ids, generation_config, kwargs = unpacked
    # transformers' has_default_max_length: no max_length anywhere, so 20 new tokens are generated
    explicit_max = any(
        value is not None
        for value in (
            kwargs.get("max_length"),
            getattr(generation_config, "max_length", None),
            getattr(model.generation_config, "max_length", None),
        )
    )
    try:
        config, model_kwargs = _resolved_config(model, generation_config, kwargs)
    except (TypeError, ValueError) as exc:
        return f"generate()'s settings do not resolve: {exc}"[:300]
    ids = model_kwargs.pop("input_ids", ids)
    extra = sorted(k for k, v in model_kwargs.items() if k not in MODEL_INPUTS and v is not None)
    if extra:
        return f"generate() is given model inputs accel's graph loop does not feed: {', '.join(extra)}"
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype not in (torch.int32, torch.int64):
        return "generate() is not given a 2-D tensor of token ids (inputs_embeds and encoder inputs are not looped)"
    reason = _unsupported(config)
    if reason is not None:
        return reason
    eos = _token_ids(config.eos_token_id)
    pad = config.pad_token_id if config.pad_token_id is not None else (eos[0] if eos else None)
    max_length, min_length = _lengths(model, config, explicit_max, ids.shape[1])
    return Greedy(
        input_ids=ids.to(torch.long),
        attention_mask=_mask(ids, model_kwargs.get("attention_mask"), pad, eos),
        max_length=max_length,
        min_length=min_length,
        eos_token_ids=eos,
        pad_token_id=None if pad is None else int(pad),
    )
