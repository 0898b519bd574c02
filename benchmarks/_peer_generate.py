"""The generate case of `python -m benchmarks peers`: GPT-2 generating with its KV cache, against the
skilled user's graph-runtime loops. (A helper module: its leading underscore keeps it off the list.)

Eager `generate()` (greedy, cache on) is the base. Each peer is the decode step with explicit
past/present KV tensors run in a hand-written greedy loop (numpy in, numpy out, no accel code in the
loop): ORT fused fp32 (`optimize_model`, model_type gpt2, opt_level 0, as ORT documents for GPT-2),
ORT fused int8 (`quantize_dynamic` on the fused step), OpenVINO fp32 (`convert_model` of the step,
the f32 precision hint) and OpenVINO with NNCF int8 weights (`nncf.compress_weights`, the NNCF way
for LLMs). The step the peers run is accel's export (`_generate_step.export_step`: TorchScript,
eager attention, dynamic batch/past/sequence axes), as the table's notes say: ORT's own
`convert_generation` writes a GreedySearch graph only from its own GPT-2 export. accel runs the
`latency` recipe on the generate pipeline. Every side's tokens are compared with eager's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import accel
from accel.optimizing.optimizers._generate_step import CacheLayout, export_step
from accel.optimizing.run import optimize
from benchmarks._peer_models import Case

Step = Callable[[dict[str, np.ndarray]], tuple[np.ndarray, ...]]
STEP_NOTE = "accel's exported step in a hand-written KV loop"


def kv_loop(step: Step, layout: CacheLayout, ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy decoding over the step: the prompt with an empty past, then one token a step."""
    batch, length = ids.shape
    past = {name: np.zeros((batch, layout.kv_heads, 0, layout.head_dim), np.float32) for name in layout.past_names}
    fed = ids.numpy()
    mask = np.ones((batch, length), np.int64)
    positions = np.tile(np.arange(length, dtype=np.int64), (batch, 1))
    tokens = [fed]
    for _ in range(new_tokens):
        logits, *presents = step({"input_ids": fed, "attention_mask": mask, "position_ids": positions, **past})
        fed = logits.argmax(-1)[:, None].astype(np.int64)
        tokens.append(fed)
        past = dict(zip(layout.past_names, presents))
        mask = np.concatenate([mask, np.ones((batch, 1), np.int64)], axis=1)
        positions = positions[:, -1:] + 1
    return torch.from_numpy(np.concatenate(tokens, axis=1))


def ort_step(path: Path, threads: int) -> Step:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda feeds: tuple(session.run(None, feeds))


def ort_fused(case: Case, step_path: Path, folder: Path, int8: bool, threads: int) -> Step:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    fused = folder / "fused.onnx"
    optimize_model(
        str(step_path), model_type="gpt2", num_heads=case.num_heads, hidden_size=case.hidden_size, opt_level=0
    ).save_model_to_file(str(fused))
    if not int8:
        return ort_step(fused, threads)
    final = folder / "fused-int8.onnx"
    quantize_dynamic(str(fused), str(final), weight_type=QuantType.QInt8, extra_options={"DefaultTensorType": 1})
    return ort_step(final, threads)


def openvino_step(case: Case, step_path: Path, folder: Path, int8: bool, threads: int) -> Step:
    import openvino as ov

    model = ov.convert_model(str(step_path))
    if int8:
        import nncf

        model = nncf.compress_weights(model)  # int8 asymmetric weights, NNCF's default for LLMs
    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    compiled = ov.Core().compile_model(model, "CPU", config)
    return lambda feeds: compiled(feeds).to_tuple()


GENERATE_PEERS: tuple[tuple[str, Callable[[Case, Path, Path, bool, int], Step], bool], ...] = (
    ("OpenVINO fp32", openvino_step, False),
    ("OpenVINO NNCF int8", openvino_step, True),
    ("ORT fused fp32", ort_fused, False),
    ("ORT fused int8", ort_fused, True),
)
NOT_RUN = {
    "compile max-autotune": "not run: generate() recompiles as the cache grows",
    "torchao int8": "not run on the generate case",
}


def steps_text(steps: Any) -> str:
    """accel's search, a candidate each that applied: its verdict, the reason where it was not kept."""
    parts = []
    for step in steps:
        if step.verdict.value == "not applicable" or step.reason.startswith(("rule does not apply", "left out by")):
            continue
        params = f" {step.params}" if step.params else ""
        kept = step.verdict.value == "accepted"
        parts.append(f"{step.optimizer}{params} {step.verdict.value}" + ("" if kept else f" [{step.reason[:110]}]"))
    return "; ".join(parts)


def _tokens_note(expected: torch.Tensor, got: torch.Tensor) -> str:
    return "tokens same" if torch.equal(expected, got) else "tokens OTHER"


def prepare_generate(
    case: Case, workdir: Path, budget_seconds: float, threads: int
) -> tuple[dict[str, Callable[[], Any]], dict[str, str], set[str]]:
    """Each side as a call generating the case's tokens, what to print about it, and the peers
    whose tokens differ from eager's (outside accel's exact token guard)."""
    (ids,) = case.inputs
    with torch.inference_mode():
        expected = case.call(case.model)
    calls: dict[str, Callable[[], Any]] = {"eager": lambda: case.call(case.model)}
    notes: dict[str, str] = {}
    outside: set[str] = set()
    began = time.perf_counter()
    step_path = workdir / "step" / "step.onnx"
    layout = export_step(case.model, ids, step_path, opset=17, reuse=False)  # accel's search exports its own
    export_seconds = time.perf_counter() - began
    for label, make, int8 in GENERATE_PEERS:
        folder = workdir / label.replace(" ", "-")
        folder.mkdir()
        began = time.perf_counter()
        try:
            step = make(case, step_path, folder, int8, threads)
            got = kv_loop(step, layout, ids, case.new_tokens)
        except Exception as exc:  # noqa: BLE001 - a peer that fails is reported, not fatal
            notes[label] = f"failed ({type(exc).__name__}: {str(exc)[:80]})"
            continue
        seconds = time.perf_counter() - began + export_seconds
        if not torch.equal(expected, got):
            outside.add(label)
        notes[label] = f"{STEP_NOTE}; setup {seconds:.0f} s, {_tokens_note(expected, got)}"
        calls[label] = lambda step=step: kv_loop(step, layout, ids, case.new_tokens)
    notes.update(NOT_RUN)
    began = time.perf_counter()
    pipeline = accel.Pipeline(model=case.model, inputs=(ids,), generate=case.generate, name="gpt2_generate")
    result = optimize(
        pipeline,
        "latency",
        out_dir=workdir / "accel",
        budget_seconds=budget_seconds,
        threads=threads,
        skip=["runtime.allocator"],
    )
    kept = "+".join(c.optimizer for c in result.result.choices) or "nothing"
    with torch.inference_mode():
        got = result.pipeline.forward((ids,))
    tried = steps_text(result.steps)
    took = time.perf_counter() - began
    notes["accel"] = (
        f"{kept}; search {took:.0f} s, budget {budget_seconds:.0f} s ({tried}), {_tokens_note(expected, got)}"
    )
    calls["accel"] = lambda: result.pipeline.forward((ids,))
    return calls, notes, outside
