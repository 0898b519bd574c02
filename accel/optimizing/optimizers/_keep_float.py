"""onnx.int8_dynamic's last rungs: the worst layers left in float, as nodes the quantizer skips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from accel.core.pipeline import Pipeline
from accel.optimizing.optimizers import NotApplicable
from accel.optimizing.optimizers.quantize import worst_linear_layers


def float_nodes(pipeline: Pipeline, fp32_path: Path, config: Any) -> tuple[list[str], dict[str, Any]]:
    """`config`: an onnx.int8_dynamic config (keep_float, per_channel). The MatMul/Gemm nodes of the worst config.keep_float share of the Linear layers (measured in
    torch, quantize.worst_linear_layers), found by the module path the TorchScript exporter puts in
    node names (`/encoder/layer.0/output/dense/MatMul`); what the lock records of them."""
    if not config.keep_float:
        return [], {}
    import onnx

    layers = worst_linear_layers(pipeline, config.keep_float, config.per_channel)
    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    prefixes = {name: "/" + name.replace(".", "/") + "/" for name in layers}
    nodes = [
        n.name
        for n in graph.node
        if n.op_type in ("MatMul", "Gemm") and any(n.name.startswith(p) for p in prefixes.values())
    ]
    if not nodes:
        raise NotApplicable(
            f"none of the {len(layers)} layers to leave in float ({', '.join(layers[:3])}...) is named in the "
            "exported graph: keep_float needs the TorchScript exporter's node names (exporter: torchscript)"
        )
    # The quantizer rewrites a Gemm as a MatMul named after it before it reads the exclusions.
    gemms = {n.name for n in graph.node if n.op_type == "Gemm"}
    excluded = [*nodes, *(f"{name}_MatMul" for name in nodes if name in gemms)]
    return excluded, {"float_layers": layers, "float_nodes": len(nodes)}
