"""Counting what a forward pass asks of the hardware: FLOPs and bytes per aten op.

`count_forward(fn, module)` runs `fn` once under a TorchDispatchMode that sees every aten op with
its input and output tensors. FLOPs come from torch.utils.flop_counter's formula registry (matmul,
convolution, attention, ...); an elementwise op (tagged pointwise) counts one FLOP per output
element, a reduction or normalization one per input element, and data movement (copies, views,
gathers) none. Bytes are the sizes of the distinct input tensors read and the outputs written;
views move nothing. A lookup (embedding, embedding_bag, index_select, gather, take) reads only
what its indices pick of its table: indices x row bytes (x element bytes for gather and take),
at most the table, not the whole table. Inputs that are the module's parameters or buffers are counted apart as
`weight_bytes`, which is what weight quantization shrinks.

Counting does no timing: op times come from a separate profiler pass (accel.profiling.costmodel).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

# Ops that only read metadata: not counted at all.
_METADATA_OPS = {
    "size",
    "sym_size",
    "stride",
    "sym_stride",
    "storage_offset",
    "sym_storage_offset",
    "numel",
    "sym_numel",
    "dim",
    "is_contiguous",
    "sym_is_contiguous",
    "is_strides_like_format",
    "is_non_overlapping_and_dense",
    "layout",
    "device",
}
# Reductions and normalizations: about one FLOP per input element (softmax and norms a few more,
# which the roofline does not need: these ops sit far below the ridge either way).
_PER_INPUT_ELEMENT_OPS = {
    "sum",
    "mean",
    "amax",
    "amin",
    "max",
    "min",
    "argmax",
    "argmin",
    "prod",
    "var",
    "var_mean",
    "std",
    "std_mean",
    "norm",
    "linalg_vector_norm",
    "_softmax",
    "_log_softmax",
    "softmax",
    "log_softmax",
    "native_layer_norm",
    "native_batch_norm",
    "_native_batch_norm_legit_no_training",
    "_native_batch_norm_legit",
    "native_group_norm",
    "cumsum",
    "logsumexp",
    "max_pool2d_with_indices",
    "avg_pool2d",
    "adaptive_avg_pool2d",
    "_adaptive_avg_pool2d",
    "max_pool2d",
    "_fused_rms_norm",
    "topk",
    "sort",
}
ROOT_MODULE = "<root>"
# Lookups read only the rows (or elements) their indices pick, not the whole table: op name ->
# (position of the table, position of the dim or None for dim 0, position of the indices, whether
# single elements rather than rows are picked).
_LOOKUP_OPS = {
    "embedding": (0, None, 1, False),
    "embedding_bag": (0, None, 1, False),
    "_embedding_bag": (0, None, 1, False),
    "_embedding_bag_forward_only": (0, None, 1, False),
    "index_select": (0, 1, 2, False),
    "gather": (0, 1, 2, True),
    "take": (0, None, 1, True),
}

# The lookups into nn.Embedding / nn.EmbeddingBag tables (aten names, as profiles show them): what
# storing the tables' rows in fewer bytes makes cheaper.
EMBEDDING_LOOKUP_OPS = frozenset(f"aten::{name}" for name in _LOOKUP_OPS if "embedding" in name)


@dataclasses.dataclass(frozen=True)
class OpCount:
    """One aten op call: what it computes and what it moves."""

    op: str
    module: str
    flops: int
    bytes_read: int
    bytes_written: int
    weight_bytes: int  # bytes of inputs that are the module's parameters or buffers
    dtype: str = ""  # dtype of the op's largest input (torch name, e.g. "float32"), "" when it has none

    def __post_init__(self) -> None:
        if min(self.flops, self.bytes_read, self.bytes_written, self.weight_bytes) < 0:
            raise ValueError(f"OpCount {self.op}: counts must be >= 0")

    @property
    def bytes_moved(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def flops_per_byte(self) -> float:
        return self.flops / self.bytes_moved if self.bytes_moved else 0.0


@dataclasses.dataclass(frozen=True)
class Counts:
    """Every aten op of one call, in execution order."""

    ops: tuple[OpCount, ...]

    @property
    def flops(self) -> int:
        return sum(o.flops for o in self.ops)

    @property
    def bytes_moved(self) -> int:
        return sum(o.bytes_moved for o in self.ops)

    @property
    def weight_bytes(self) -> int:
        return sum(o.weight_bytes for o in self.ops)

    @property
    def op_count(self) -> int:
        return len(self.ops)

    def to_dict(self) -> dict[str, Any]:
        return {
            "flops": self.flops,
            "bytes_moved": self.bytes_moved,
            "weight_bytes": self.weight_bytes,
            "op_count": self.op_count,
        }


def parameter_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for tensor in list(module.parameters()) + list(module.buffers()):
        key = _storage_key(tensor)
        if key in seen:
            continue
        seen.add(key)
        total += tensor.numel() * tensor.element_size()
    return total


def _storage_key(tensor: torch.Tensor) -> int:
    try:
        return tensor.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return id(tensor)


def _tensor_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _distinct_tensors(values: Any) -> list[torch.Tensor]:
    flat, _ = tree_flatten(values)
    seen: set[tuple] = set()
    tensors = []
    for value in flat:
        if not isinstance(value, torch.Tensor):
            continue
        key = (_storage_key(value), value.storage_offset(), tuple(value.shape), tuple(value.stride()))
        if key in seen:
            continue
        seen.add(key)
        tensors.append(value)
    return tensors


def _lookup_table_read(name: str, args: tuple) -> tuple[torch.Tensor, int] | None:
    """(table, bytes the lookup reads of it) for a lookup op: the rows its indices pick (elements,
    for gather and take), each index counted, capped by the table's size; None for any other op."""
    spec = _LOOKUP_OPS.get(name)
    if spec is None:
        return None
    table_at, dim_at, index_at, elements = spec
    if len(args) <= index_at:
        return None
    table, index = args[table_at], args[index_at]
    if not isinstance(table, torch.Tensor) or not isinstance(index, torch.Tensor) or table.dim() == 0:
        return None
    dim = int(args[dim_at]) % table.dim() if dim_at is not None else 0
    picked_bytes = table.element_size() if elements else _tensor_bytes(table) // max(table.shape[dim], 1)
    return table, min(index.numel() * picked_bytes, _tensor_bytes(table))


def _flops(
    func: Any, args: tuple, kwargs: dict, out: Any, inputs: list[torch.Tensor], outputs: list[torch.Tensor]
) -> int:
    packet = func._overloadpacket
    formula = flop_registry.get(packet)
    if formula is not None:
        try:
            return int(formula(*args, **kwargs, out_val=out))
        except Exception:  # a formula that does not cover this overload: fall through to the rules
            pass
    name = packet.__name__
    if torch.Tag.pointwise in getattr(func, "tags", ()):
        return max((t.numel() for t in outputs), default=0)
    if name.rstrip("_") in _PER_INPUT_ELEMENT_OPS:
        return max((t.numel() for t in inputs), default=0)
    return 0


class _CountingMode(TorchDispatchMode):
    def __init__(self, weight_keys: set[int], module_stack: list[str]) -> None:
        super().__init__()
        self.weight_keys = weight_keys
        self.module_stack = module_stack
        self.ops: list[OpCount] = []

    def _bytes(
        self, func: Any, args: tuple, inputs: list[torch.Tensor], outputs: list[torch.Tensor]
    ) -> tuple[int, int, int]:
        """Bytes read, written, and read of the module's weights, by one op that is not a view."""
        read_bytes = {id(t): _tensor_bytes(t) for t in inputs}
        lookup = _lookup_table_read(func._overloadpacket.__name__, args)
        if lookup is not None and id(lookup[0]) in read_bytes:
            read_bytes[id(lookup[0])] = lookup[1]
        written = sum(_tensor_bytes(t) for t in outputs)
        if func._schema.is_mutable:
            # An in-place or out= op writes into one of its inputs: count the write once.
            input_keys = {_storage_key(t) for t in inputs}
            written = sum(_tensor_bytes(t) for t in outputs if _storage_key(t) in input_keys) or written
        weights = sum(read_bytes[id(t)] for t in inputs if _storage_key(t) in self.weight_keys)
        return sum(read_bytes.values()), written, weights

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._overloadpacket.__name__
        # A composite op without a FLOP formula (aten::linear under inference_mode) is counted as
        # the ops it decomposes into, as torch.utils.flop_counter does.
        if func._overloadpacket not in flop_registry and name not in _METADATA_OPS:
            with self:
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        if name in _METADATA_OPS:
            return out
        inputs = _distinct_tensors((args, kwargs))
        if func.is_view:
            outputs: list[torch.Tensor] = []
            read = written = weights = 0
        else:
            outputs = _distinct_tensors(out)
            read, written, weights = self._bytes(func, args, inputs, outputs)
        flops = _flops(func, args, kwargs, out, inputs, outputs) if not func.is_view else 0
        largest = max(inputs, key=lambda t: t.numel(), default=None)
        dtype = str(largest.dtype).removeprefix("torch.") if largest is not None else ""
        self.ops.append(
            OpCount(
                op=f"aten::{name}",
                module=self.module_stack[-1],
                flops=flops,
                bytes_read=read,
                bytes_written=written,
                weight_bytes=weights,
                dtype=dtype,
            )
        )
        return out


def count_forward(fn: Callable[[], Any], module: torch.nn.Module | None = None) -> Counts:
    """Run `fn` once and count FLOPs and bytes for every aten op it executes.

    With `module`, each op is attributed to the innermost submodule running it (its qualified
    name, `<root>` for the module itself), and reads of its parameters and buffers are weight bytes.
    """
    stack = [ROOT_MODULE]
    handles = []
    weight_keys: set[int] = set()
    if module is not None:
        weight_keys = {_storage_key(t) for t in list(module.parameters()) + list(module.buffers())}
        for qualified, sub in module.named_modules():
            if not qualified:
                continue

            def enter(_mod, _args, name=qualified):
                stack.append(name)

            def leave(_mod, _args, _out, name=qualified):
                if stack[-1] == name:
                    stack.pop()

            handles.append(sub.register_forward_pre_hook(enter))
            handles.append(sub.register_forward_hook(leave))
    mode = _CountingMode(weight_keys, stack)
    try:
        with torch.no_grad(), mode:
            fn()
    finally:
        for handle in handles:
            handle.remove()
    return Counts(ops=tuple(mode.ops))
