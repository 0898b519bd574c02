"""The kernels the cures really run, built at one Linear layer's size so calibration can time them.

A square GEMM's peak says what a unit can do; a cure runs something else: quantize.int8_dynamic
runs the quantized engine's dynamic Linear (fbgemm on x86), onnx.int8_dynamic ONNX Runtime's
DynamicQuantizeLinear + MatMulInteger (MLAS), onnx.runtime ORT's float32 MatMul, precision.bf16 a
bf16 Linear (cast, or under autocast), precision.fp16 an fp16 one. On an AVX2-only CPU the square
bf16 and int8 GEMMs crawl in software while fbgemm's and MLAS's int8 kernels are fast, so only the
cures' own kernels say which cure can pay.

Each kernel runs `rows` x LAYER_IN -> LAYER_OUT (a BERT-base feed-forward Linear) with
FULL_ROWS rows (QUICK_ROWS for `accel calibrate --quick`), or PROBE_ROWS where one call would take
longer than SLOW_CALL_SECONDS (a kernel emulated in software: its rate is tiny at any size).
`fp32_linear`, eager float32, is the baseline the others are compared with.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

LAYER_IN, LAYER_OUT = 768, 3072
FULL_ROWS = 256
QUICK_ROWS = 128
PROBE_ROWS = 16
# A kernel whose FULL_ROWS call would take longer than this is timed at PROBE_ROWS instead: below
# ~5 GFLOP/s it is emulated in software (AVX2 bf16 runs at ~1), and its rate is tiny at any size.
SLOW_CALL_SECONDS = 0.25
PROBE_CALLS = 3
ONNX_OPSET = 17

Call = Callable[[], Any]
AtRows = Callable[[int], Call]  # rows -> a call running the kernel on that many rows


@dataclasses.dataclass(frozen=True)
class CureKernel:
    name: str
    dtype: str  # calibration dtype name: fp32, bf16, fp16, int8
    cure: str | None  # the optimizer that runs this kernel; None for the eager float32 baseline
    description: str
    build: Callable[[str, int], AtRows]  # (device, threads) -> AtRows
    cpu_only: bool = False
    # Runs in its own runtime's thread pool (ONNX Runtime's), beside torch's OpenMP threads, which
    # spin for a while after torch's kernels: its CPU share then reads this process's own threads
    # competing (67% measured at load 1.2), not other processes, and says nothing about the load.
    own_pool: bool = False


KERNELS: dict[str, CureKernel] = {}
BASELINE_KERNEL = "fp32_linear"


def _kernel(
    name: str, dtype: str, cure: str | None, description: str, cpu_only: bool = False, own_pool: bool = False
) -> Callable[[Callable[[str, int], AtRows]], Callable[[str, int], AtRows]]:
    def register(build: Callable[[str, int], AtRows]) -> Callable[[str, int], AtRows]:
        if name in KERNELS:
            raise ValueError(f"cure kernel {name!r} is registered twice")
        KERNELS[name] = CureKernel(name, dtype, cure, description, build, cpu_only, own_pool)
        return build

    return register


def flops(rows: int) -> int:
    return 2 * rows * LAYER_IN * LAYER_OUT


def _weight(device: str) -> torch.nn.Linear:
    generator = torch.Generator().manual_seed(0)
    layer = torch.nn.Linear(LAYER_IN, LAYER_OUT, device="meta")
    layer.weight = torch.nn.Parameter(torch.randn(LAYER_OUT, LAYER_IN, generator=generator) / LAYER_IN**0.5)
    layer.bias = torch.nn.Parameter(torch.zeros(LAYER_OUT))
    return layer.to(device).eval().requires_grad_(False)


def _rows(rows: int, device: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(rows, LAYER_IN, generator=generator).to(device=device, dtype=dtype)


def _eager(layer: torch.nn.Module, device: str, dtype: torch.dtype = torch.float32) -> AtRows:
    def at_rows(rows: int) -> Call:
        x = _rows(rows, device, dtype)
        return lambda: layer(x)

    return at_rows


@_kernel(BASELINE_KERNEL, "fp32", None, "eager float32 Linear (the baseline)")
def _fp32_linear(device: str, threads: int) -> AtRows:
    return _eager(_weight(device), device)


@_kernel("bf16_linear", "bf16", "precision.bf16", "bf16 Linear, weights and input cast (mode: cast)")
def _bf16_linear(device: str, threads: int) -> AtRows:
    return _eager(_weight(device).to(torch.bfloat16), device, torch.bfloat16)


@_kernel("bf16_autocast_linear", "bf16", "precision.bf16", "float32 Linear under bf16 autocast (mode: autocast)")
def _bf16_autocast_linear(device: str, threads: int) -> AtRows:
    layer = _weight(device)
    device_type = "cuda" if device.startswith("cuda") else "cpu"

    def at_rows(rows: int) -> Call:
        x = _rows(rows, device)

        def call() -> Any:
            with torch.autocast(device_type, dtype=torch.bfloat16):
                return layer(x)

        return call

    return at_rows


@_kernel("fp16_linear", "fp16", "precision.fp16", "fp16 Linear, weights and input cast")
def _fp16_linear(device: str, threads: int) -> AtRows:
    return _eager(_weight(device).to(torch.float16), device, torch.float16)


@_kernel(
    "int8_dynamic_fbgemm",
    "int8",
    "quantize.int8_dynamic",
    "torch.ao dynamic quantized Linear (the quantized engine's kernel: fbgemm on x86)",
    cpu_only=True,
)
def _int8_dynamic(device: str, threads: int) -> AtRows:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated; its kernels are what run fast
        from torch.ao.quantization import quantize_dynamic

        model = quantize_dynamic(torch.nn.Sequential(_weight(device)), {torch.nn.Linear}, dtype=torch.qint8)
    return _eager(model, device)


def _onnx_linear() -> Any:
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(_weight("cpu").weight.T.contiguous().numpy(), "weight")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "weight"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", LAYER_IN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", LAYER_OUT])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])


def _quantized_bytes(model: Any) -> bytes:
    """The graph through onnxruntime's quantize_dynamic, as onnx.int8_dynamic quantizes an export."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="accel-calibration-") as folder:
        source, target = Path(folder) / "linear.onnx", Path(folder) / "linear.int8.onnx"
        onnx.save(model, str(source))
        disabled = logging.root.manager.disable
        logging.disable(logging.WARNING)  # quantize_dynamic logs a pre-processing hint as a warning
        try:
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=False)
        finally:
            logging.disable(disabled)
        return target.read_bytes()


def _ort(quantized: bool) -> Callable[[str, int], AtRows]:
    def build(device: str, threads: int) -> AtRows:
        import onnxruntime as ort

        model = _onnx_linear()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # No spinning: idle ORT threads spinning would steal the cores the next kernel is timed on.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        serialized = _quantized_bytes(model) if quantized else model.SerializeToString()
        session = ort.InferenceSession(serialized, options, providers=["CPUExecutionProvider"])

        def at_rows(rows: int) -> Call:
            feed = {"x": _rows(rows, "cpu").numpy()}
            return lambda: session.run(None, feed)

        return at_rows

    return build


_kernel("ort_fp32", "fp32", "onnx.runtime", "ONNX Runtime float32 MatMul (MLAS)", cpu_only=True, own_pool=True)(
    _ort(False)
)
_kernel(
    "ort_int8",
    "int8",
    "onnx.int8_dynamic",
    "ONNX Runtime DynamicQuantizeLinear + MatMulInteger (MLAS), from quantize_dynamic",
    cpu_only=True,
    own_pool=True,
)(_ort(True))


def prepare(
    device: str, threads: int, seconds_of: Callable[[Call], float], rows: int = FULL_ROWS
) -> tuple[dict[str, tuple[Call, int]], dict[str, str]]:
    """Every kernel that runs on `device`, built, sized (`rows`, or PROBE_ROWS for a slow one) and
    warmed up: {name: (call, rows)}, and {name: why not} for those that could not run.
    `seconds_of` times one call (after a warm-up)."""
    calls: dict[str, tuple[Call, int]] = {}
    unavailable: dict[str, str] = {}
    for name, kernel in KERNELS.items():
        if kernel.cpu_only and device != "cpu":
            continue
        try:
            at_rows = kernel.build(device, threads)
            probe = at_rows(PROBE_ROWS)
            # The baseline is always timed at full size, so every ratio against it compares a kernel
            # with eager float32 at least as large; the fastest of a few probe calls decides (one
            # call on a busy machine can take many times its time).
            probe_seconds = min(seconds_of(probe) for _ in range(PROBE_CALLS))
            slow = name != BASELINE_KERNEL and probe_seconds * rows / PROBE_ROWS > SLOW_CALL_SECONDS
        # A kernel this build, library or CPU lacks fails in its library's own exception types
        # (onnxruntime's derive from Exception directly): it is recorded as unavailable, with why.
        except Exception as exc:  # noqa: BLE001
            unavailable[name] = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            continue
        if slow:
            calls[name] = (probe, PROBE_ROWS)
        else:
            full = at_rows(rows)
            full()  # warm-up at the size it is timed at
            calls[name] = (full, rows)
    return calls, unavailable
