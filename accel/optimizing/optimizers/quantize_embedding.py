"""`quantize.embedding`: embedding tables stored row-wise in int8 (or float16), read by their lookups.

A lookup into a table far larger than the CPU's caches reads each picked row from memory: what it
costs is the bytes of the rows. Stored in int8 with one float scale and offset per row (torch's
quantized `Embedding` / `EmbeddingBag`: the fbgemm byte-rowwise kernels that dequantize only the rows
gathered), a row of d float32 values shrinks from 4d to d + 8 bytes; in float16, to 2d. Outputs stay
float32.

The quantized bag kernel sums (it has no mode, padding_idx or max_norm): an `nn.EmbeddingBag` that
means, maxes or skips a padding index keeps its behaviour in float16 instead, as does any table under
`dtype: fp16` (the safer variant when int8 rows lose too much). Only exact `nn.Embedding` /
`nn.EmbeddingBag` modules are replaced: a subclass may compute more in its forward (a scaled word
embedding). The user's model is never touched: the copy shares nothing with it but the tables it
does not quantize.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from typing import Any, ClassVar

import torch
from torch import nn

from accel.core.measure import now
from accel.core.pipeline import Pipeline
from accel.optimizing.optimizers import Applied, Context, Optimizer, register

DTYPES = ("int8", "fp16")
# Tables smaller than this stay float32: their rows stay in cache, and dequantizing costs a little.
MIN_TABLE_BYTES = 1 << 20
# Worth it only when the tables hold most of the model's weights: otherwise the lookups are not
# where its bytes go (a transformer's word embedding next to its layers)...
MIN_TABLE_SHARE = 0.5
# ...and only beyond the largest cache, which serves the rows of a smaller table. When the machine
# does not say how large its caches are, a server CPU's last level cache.
DEFAULT_CACHE_BYTES = 32 << 20
TABLE_TYPES = (nn.Embedding, nn.EmbeddingBag)


@dataclasses.dataclass(frozen=True)
class EmbeddingConfig:
    dtype: str = "int8"  # int8: per-row scale and offset (fbgemm); fp16: every table in float16
    min_table_bytes: int = MIN_TABLE_BYTES

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.min_table_bytes < 0:
            raise ValueError(f"min_table_bytes must be >= 0, got {self.min_table_bytes}")


def tables(model: nn.Module, min_bytes: int = 0) -> dict[str, Any]:
    """The model's float32 nn.Embedding / nn.EmbeddingBag modules (exact types, no max_norm, which
    writes into the table) of at least `min_bytes`, by qualified name."""
    found: dict[str, Any] = {}
    for name, module in model.named_modules():
        if type(module) not in TABLE_TYPES:
            continue
        weight = module.weight
        if weight.dtype == torch.float32 and module.max_norm is None and _bytes(weight) >= min_bytes:
            found[name] = module
    return found


def stored_bytes(module: nn.Module) -> int:
    """Bytes a table's weights occupy: float tensors, or int8 rows plus their per-row parameters."""
    total = 0
    for value in module.state_dict().values():
        if not isinstance(value, torch.Tensor):
            continue
        total += _bytes(value)
        if value.is_quantized and value.qscheme() in (torch.per_channel_affine, torch.per_channel_affine_float_qparams):
            total += _bytes(value.q_per_channel_scales()) + _bytes(value.q_per_channel_zero_points())
    return total


def _bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _int8_exact(table: Any) -> bool:
    """Whether torch's quantized module computes what this table does (its bag kernel only sums)."""
    if isinstance(table, nn.EmbeddingBag):
        return table.mode == "sum" and table.padding_idx is None
    return True


class Int8Table(nn.Module):
    """torch's quantized Embedding / EmbeddingBag of a table (per-row float scale and offset), called
    as the table is: its kernels want contiguous indices, which a column of a batch is not."""

    def __init__(self, table: nn.Module) -> None:
        super().__init__()
        self.table = _quantized(table)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        args = tuple(a.contiguous() if isinstance(a, torch.Tensor) else a for a in args)
        kwargs = {k: v.contiguous() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        return self.table(*args, **kwargs)


def _quantized(table: Any) -> nn.Module:
    from torch.ao.nn import quantized
    from torch.ao.quantization import float_qparams_weight_only_qconfig

    source = copy.copy(table)  # the qconfig is set on a shallow copy, never on the user's module
    source.qconfig = float_qparams_weight_only_qconfig
    quantized_class = quantized.EmbeddingBag if isinstance(table, nn.EmbeddingBag) else quantized.Embedding
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's deprecation of quantized tensors (the kernels stay)
        return quantized_class.from_float(source)


class HalfTable(nn.Module):
    """A table stored in float16 behind a float32 interface (per-sample weights cast to match)."""

    def __init__(self, table: Any) -> None:
        super().__init__()
        self.table = _half_copy(table)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        args = tuple(a.half() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
        kwargs = {
            k: v.half() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in kwargs.items()
        }
        return self.table(*args, **kwargs).float()


def _half_copy(table: Any) -> nn.Module:
    weight = table.weight.detach().half()
    options: dict[str, Any] = {
        "padding_idx": table.padding_idx,
        "scale_grad_by_freq": table.scale_grad_by_freq,
        "sparse": table.sparse,
    }
    if isinstance(table, nn.EmbeddingBag):
        options.update(mode=table.mode, include_last_offset=table.include_last_offset)
        return nn.EmbeddingBag.from_pretrained(weight, freeze=True, **options)
    return nn.Embedding.from_pretrained(weight, freeze=True, **options)


def compressed(table: Any, dtype: str) -> tuple[nn.Module, str]:
    """The table's replacement and the dtype it stores."""
    if dtype == "int8" and _int8_exact(table):
        return Int8Table(table), "int8"
    return HalfTable(table), "fp16"


@register
class QuantizeEmbedding(Optimizer):
    name = "quantize.embedding"
    cures = ("memory_bandwidth",)
    description = (
        "Embedding tables beyond the cache stored row-wise in int8 (fbgemm, per-row scale) or float16: "
        "lookups gather fewer bytes."
    )
    Config = EmbeddingConfig
    predicted_setup_calls: ClassVar[float] = 2.0

    def applicable(self, pipeline: Pipeline, context: Context) -> str | None:
        model = pipeline.model
        if not isinstance(model, nn.Module):
            return "the model is not a torch.nn.Module"
        if context.machine.is_cuda:
            return "the row-wise int8 lookups are CPU kernels (fbgemm); the model is on a GPU"
        found = tables(model)
        if not found:
            return "the model has no float32 nn.Embedding or nn.EmbeddingBag tables"
        table_bytes = sum(_bytes(t.weight) for t in found.values())
        weight_bytes = sum(_bytes(p) for p in model.parameters()) or 1
        cache = max(context.machine.cache_bytes.values(), default=0) or DEFAULT_CACHE_BYTES
        if table_bytes <= cache:
            return (
                f"its embedding tables hold {table_bytes / 1e6:.1f} MB, within the {cache / 1e6:.0f} MB cache: "
                f"their rows are served from the cache, not memory"
            )
        if table_bytes < MIN_TABLE_SHARE * weight_bytes:
            return (
                f"its embedding tables hold {table_bytes / weight_bytes:.0%} of its {weight_bytes / 1e6:.0f} MB "
                f"of weights: lookups are not where its bytes go"
            )
        return None

    def apply(self, pipeline: Pipeline, config: EmbeddingConfig, context: Context) -> Applied:
        started = now()
        chosen = tables(pipeline.model, config.min_table_bytes)
        replaced: dict[int, nn.Module] = {}
        per_table: dict[str, dict[str, Any]] = {}
        for name, table in chosen.items():
            replacement, stored = compressed(table, config.dtype)
            replaced[id(table)] = replacement
            per_table[name] = {
                "dtype": stored,
                "bytes_before": stored_bytes(table),
                "bytes_after": stored_bytes(replacement),
            }
        # Deep-copied with the replacements as the memo: the float tables are not copied first.
        model = copy.deepcopy(pipeline.model, memo=dict(replaced)).eval()
        before = sum(t["bytes_before"] for t in per_table.values())
        after = sum(t["bytes_after"] for t in per_table.values())
        return Applied(
            pipeline=pipeline.replace(model=model),
            state={"dtype": config.dtype, "tables": per_table},
            setup_seconds=now() - started,
            notes={"tables": len(per_table), "table_bytes_before": before, "table_bytes_after": after},
        )

    def safer_variants(self, config: EmbeddingConfig, machine: Any) -> list[Any]:
        """float16 rows: 11 bits of mantissa per value instead of 8 bits over each row's range."""
        return [dataclasses.replace(config, dtype="fp16")] if config.dtype == "int8" else []
