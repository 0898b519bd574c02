"""The skilled peers of `python -m benchmarks peers`, each applied to a case as its own documentation
says: OpenVINO fp32 and NNCF int8, ONNX Runtime fused fp32 and int8, torch.compile max-autotune with
freezing, torchao int8 (see benchmarks/peers.py). (A helper module: its leading underscore keeps it
off the list of benchmarks.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from benchmarks._peer_models import Case

THREADS = 2
CALIBRATION_BATCHES = 8


class _First(torch.nn.Module):
    """The model's first output tensor (BERT's last hidden state, GPT-2's logits): what exporters follow."""

    def __init__(self, case: Case) -> None:
        super().__init__()
        self.model = case.model
        self.case = case
        # The TorchScript exporter puts the traced module back in its own mode afterwards, through the model.
        self.training = case.model.training

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return first(self.case.call(self.model, inputs))


def first(out: Any) -> torch.Tensor:
    if isinstance(out, np.ndarray):
        return torch.from_numpy(out)
    if isinstance(out, torch.Tensor):
        return out
    return next(iter(out.values())) if hasattr(out, "values") else out[0]  # a dict or ModelOutput, a tuple


def calibration(case: Case, count: int) -> list[tuple[torch.Tensor, ...]]:
    """Batches shaped like the case's: other token ids, other images."""
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(count):
        batches.append(
            tuple(
                torch.randint(1, int(t.max()) + 1, t.shape, generator=generator)
                if not t.is_floating_point()
                else torch.randn(t.shape, generator=generator)
                for t in case.inputs
            )
        )
    return batches


def _session(path: Path) -> Callable[..., np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # ORT's pool spins between calls by default, stealing the cores of the candidate timed next
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return lambda *inputs: session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0]


def _export(case: Case, path: Path) -> None:
    names = [f"input_{i}" for i in range(len(case.inputs))]
    dynamic = {name: {0: "batch", 1: "sequence"} for name in names} if case.stream is not None else None
    torch.onnx.export(
        _First(case), case.inputs, str(path), dynamo=False, opset_version=17, input_names=names, dynamic_axes=dynamic
    )


def ort_fused(case: Case, workdir: Path, int8: bool) -> Callable[..., Any]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.transformers.optimizer import optimize_model

    plain, fused, final = workdir / "plain.onnx", workdir / "fused.onnx", workdir / "int8.onnx"
    _export(case, plain)
    if case.fusion_type:
        optimize_model(
            str(plain), model_type=case.fusion_type, num_heads=case.num_heads, hidden_size=case.hidden_size, opt_level=0
        ).save_model_to_file(str(fused))
    else:
        fused = plain
    if not int8:
        return _session(fused)
    if case.fusion_type is None and any(isinstance(m, torch.nn.Conv2d) for m in case.model.modules()):

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                batches = calibration(case, CALIBRATION_BATCHES)
                self.feeds = iter([{"input_0": b[0].numpy()} for b in batches])

            def get_next(self) -> dict | None:
                return next(self.feeds, None)

        quantize_static(str(fused), str(final), Reader(), quant_format=QuantFormat.QDQ, per_channel=True)
    else:
        quantize_dynamic(
            str(fused), str(final), weight_type=QuantType.QInt8, extra_options={"DefaultTensorType": 1}
        )  # 1: FLOAT, for the fused kernels' outputs the quantizer cannot type
    return _session(final)


def openvino(case: Case, workdir: Path, int8: bool) -> Callable[..., Any]:
    import openvino as ov

    shapes = [ov.PartialShape([-1] * t.dim()) for t in case.inputs] if case.stream is not None else None
    model = ov.convert_model(_First(case), example_input=case.inputs, input=shapes)
    if int8:
        import nncf

        dataset = nncf.Dataset(calibration(case, CALIBRATION_BATCHES), lambda b: tuple(t.numpy() for t in b))
        kind = nncf.ModelType.TRANSFORMER if case.fusion_type else None
        model = nncf.quantize(model, dataset, model_type=kind, subset_size=CALIBRATION_BATCHES)
    compiled = ov.Core().compile_model(
        model,
        "CPU",
        {"INFERENCE_NUM_THREADS": THREADS, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"},
    )
    return lambda *inputs: compiled(tuple(t.numpy() for t in inputs))[0]


def compile_autotuned(case: Case, workdir: Path, int8: bool) -> Callable[..., Any]:
    from torch._inductor import config as inductor_config

    compiled = torch.compile(case.model, mode="max-autotune-no-cudagraphs")

    def call(*inputs: torch.Tensor) -> Any:
        with inductor_config.patch(freezing=True):
            return case.call(compiled, inputs)

    return call


def torchao_int8(case: Case, workdir: Path, int8: bool) -> Callable[..., Any]:
    import copy

    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    model = copy.deepcopy(case.model)
    quantize_(model, Int8DynamicActivationInt8WeightConfig())
    return lambda *inputs: case.call(model, inputs)


PEERS: tuple[tuple[str, Callable[[Case, Path, bool], Callable[..., Any]], bool], ...] = (
    ("OpenVINO fp32", openvino, False),
    ("OpenVINO NNCF int8", openvino, True),
    ("ORT fused fp32", ort_fused, False),
    ("ORT fused int8", ort_fused, True),
    ("compile max-autotune", compile_autotuned, False),
    ("torchao int8", torchao_int8, True),
)
