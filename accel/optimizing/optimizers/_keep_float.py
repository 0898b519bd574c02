"""onnx.int8_dynamic's last rungs: the worst layers left in float, as nodes the quantizer skips."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from accel.core.pipeline import Pipeline
from accel.optimizing.optimizers import NotApplicable
from accel.optimizing.optimizers.quantize import worst_linear_layers


def float_nodes(pipeline: Pipeline, fp32_path: Path, config: Any) -> tuple[list[str], dict[str, Any]]:
    """`config`: an onnx.int8_dynamic config (keep_float, per_channel). The MatMul/Gemm nodes of the worst config.keep_float share of the Linear layers (measured in
    torch, quantize.worst_linear_layers), found by the module path the TorchScript exporter puts in
    node names (`/encoder/layer.0/output/dense/MatMul`, under `/model/` for a keyword call traced
    through a wrapper); what the lock records of them."""
    if not config.keep_float:
        return [], {}
    import onnx

    layers = worst_linear_layers(pipeline, config.keep_float, config.per_channel)
    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    nodes = [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and _names_any(n, layers)]
    if not nodes:
        raise NotApplicable(
            f"none of the {len(layers)} layers to leave in float ({', '.join(layers[:3])}...) is named in the "
            "exported graph (neither a TorchScript node name nor torch.export's name_scopes metadata names them)"
        )
    # The quantizer rewrites a Gemm as a MatMul named after it before it reads the exclusions.
    gemms = {n.name for n in graph.node if n.op_type == "Gemm"}
    excluded = [*nodes, *(f"{name}_MatMul" for name in nodes if name in gemms)]
    return excluded, {"float_layers": layers, "float_nodes": len(nodes)}


def _names_any(node: Any, layers: list[str]) -> bool:
    """Whether an exported node computes in one of `layers` (module paths of Linear layers, so
    leaves). torch.export (dynamo) records the node's module scopes in its metadata; the TorchScript exporter puts
    the scope in the name, attribute names joined by "/" with a container's index after a dot
    (`layer.0`), under `/model/` when a keyword call was traced through a wrapper."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return False
            return any(scope in layers for scope in scopes)  # module paths, then the fx node's own name
    scope = "." + node.name.replace("/", ".")
    return any(f".{layer}." in scope for layer in layers)
