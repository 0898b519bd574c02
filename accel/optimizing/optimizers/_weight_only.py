"""Weight-only quantization shared by `onnx.weight_only` and `onnx.generate_weight_only`: ONNX
Runtime's MatMulNBits, 4-bit or 8-bit blockwise weights, activations left in float.

Blockwise 4-bit weights move 8x fewer bytes than fp32 (8-bit, 4x), a scale per `block_size`
weights (`onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer`, round to
nearest). It pays only when the weights do not fit in cache: weights that stay in cache between
calls cost no memory traffic (`fits_in_cache` says why not).

The quantizer takes MatMul nodes with a constant weight only; a Linear on 2-D inputs exports as
`Gemm` (and transformers' Conv1D as `Gemm` without transB), so such Gemms are first rewritten as
the MatMul (and bias Add) they compute (`gemm_as_matmul_`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from accel.core.errors import AccelError
from accel.core.machine import Machine
from accel.optimizing.optimizers._onnx_export import quiet
from accel.optimizing.optimizers.quantize import _conv1d_class

BITS = (4, 8)
# MatMulNBits' block sizes: a power of two from 16 up. 32 keeps a 4-bit random-init model within
# the int8 guard (cosine 0.995); ORT's default of 128 moves fewer scale bytes but errs more.
BLOCK_SIZES = (16, 32, 64, 128, 256)
DEFAULT_BLOCK_SIZE = 32
# MatMulNBits' accuracy_level: 0 unset (ORT picks), 1 fp32, 2 fp16, 3 bf16, 4 int8 activations.
# 4 is the default: MLAS's int8 kernels. Unset, a batch-1 wide MLP's 4-bit weights ran 3x slower
# and its 8-bit weights 150x slower (a dequantizing fallback) than at 4, on a Zen 4 CPU.
ACCURACY_LEVELS = (0, 1, 2, 3, 4)
DEFAULT_ACCURACY_LEVEL = 4
# Where sysfs names no cache size: a large server L3. Weights under it may stay cached between calls.
FALLBACK_CACHE_BYTES = 64 * 1024**2
NO_MATMUL_HINT = "the quantizer takes MatMul (and Linear-like Gemm) nodes with constant weights"


class WeightOnlySettings(Protocol):
    """The fields a weight-only config carries (both optimizers' configs have them)."""

    @property
    def bits(self) -> int: ...
    @property
    def block_size(self) -> int: ...
    @property
    def symmetric(self) -> bool: ...
    @property
    def accuracy_level(self) -> int: ...


def check_settings(config: WeightOnlySettings) -> None:
    """Raise ValueError naming the field and the value it got, for a config's __post_init__."""
    if config.bits not in BITS:
        raise ValueError(f"bits must be 4 or 8, got {config.bits!r}")
    if config.block_size not in BLOCK_SIZES:
        raise ValueError(f"block_size must be one of {', '.join(map(str, BLOCK_SIZES))}, got {config.block_size!r}")
    if not isinstance(config.symmetric, bool):
        raise ValueError(f"symmetric must be true or false, got {config.symmetric!r}")
    if config.accuracy_level not in ACCURACY_LEVELS:
        raise ValueError(f"accuracy_level must lie in 0..4, got {config.accuracy_level!r}")


def linear_weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the floating-point weights of the model's nn.Linear and transformers Conv1D layers
    (a weight shared by two layers counted once)."""
    conv1d = _conv1d_class()
    seen: dict[int, int] = {}
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) or (conv1d is not None and isinstance(module, conv1d)):
            weight = module.weight
            if isinstance(weight, torch.Tensor) and weight.is_floating_point():
                seen[id(weight)] = weight.numel() * weight.element_size()
    return sum(seen.values())


def largest_cache_bytes(machine: Machine) -> tuple[int, str]:
    """The machine's largest cache, and what it is called (sysfs' level, or the fallback's reason)."""
    if machine.cache_bytes:
        level = max(machine.cache_bytes, key=lambda name: machine.cache_bytes[name])
        return machine.cache_bytes[level], level
    return FALLBACK_CACHE_BYTES, "cache (size unknown: a large server L3 assumed)"


def fits_in_cache(model: torch.nn.Module, machine: Machine) -> str | None:
    """Why weight-only quantization would not pay (the weights fit in cache), or None."""
    weights = linear_weight_bytes(model)
    if weights == 0:
        return "the model has no nn.Linear (or transformers Conv1D) layers with float weights"
    cache, level = largest_cache_bytes(machine)
    if weights <= cache:
        return (
            f"the Linear weights ({weights / 1e6:.1f} MB) fit in the {level} ({cache / 1e6:.1f} MB): they are "
            "not streamed from memory each call, so fewer weight bytes would not make it faster"
        )
    return None


def gemm_as_matmul_(model: Any) -> int:
    """Rewrite, in the ONNX `model` (mutated), each Linear-like Gemm (alpha = beta = 1, no transA,
    a constant weight) as MatMul with the weight laid out (in, out) plus an Add of its bias: the
    form MatMulNBits quantizes. Returns how many were rewritten."""
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    nodes = []
    rewritten = 0
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        linear = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if node.op_type != "Gemm" or not linear or node.input[1] not in initializers:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        name = f"{node.input[1]}_in_out" if attrs.get("transB", 0) else node.input[1]
        if name not in initializers:
            initializers[name] = numpy_helper.from_array(weight.T.copy(), name)
            graph.initializer.append(initializers[name])
        has_bias = len(node.input) > 2 and node.input[2] != ""
        product = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], name], [product], name=f"{node.name}_matmul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_bias"))
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return rewritten


def quantize_weights(fp32_path: Path, out_path: Path, config: WeightOnlySettings) -> dict[str, Any]:
    """MatMulNBits on the export at `fp32_path`, written to `out_path`; what the lock records. A
    graph where no MatMul was quantized is refused (AccelError) and its files removed."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(fp32_path))
    gemms = gemm_as_matmul_(model)
    with quiet():
        quantizer = MatMulNBitsQuantizer(
            model,
            bits=config.bits,
            block_size=config.block_size,
            is_symmetric=config.symmetric,
            accuracy_level=config.accuracy_level or None,
        )
        quantizer.process()
        quantizer.model.save_model_to_file(str(out_path), use_external_data_format=False)
    fp32_path.unlink(missing_ok=True)
    quantized = sum(
        node.op_type == "MatMulNBits" for node in onnx.load(str(out_path), load_external_data=False).graph.node
    )
    if not quantized:
        out_path.unlink(missing_ok=True)
        raise AccelError("no MatMul with a constant weight was quantized (0 MatMulNBits nodes)", NO_MATMUL_HINT)
    return {"matmul_nbits_nodes": quantized, "gemms_rewritten": gemms, "bits": config.bits}
